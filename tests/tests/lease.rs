//! The per-game lease on real Redis: exclusive, renewed while held, released
//! by compare-and-delete even when its holder is cancelled.

use std::time::Duration;

use shared::adapters::redis::{lease_key, LeaseStore};
use system_tests::services::PrivateRedis;
use system_tests::TestEnv;

#[tokio::test]
async fn a_held_lease_is_exclusive_renewed_and_released_by_its_holder_only() {
    let env = TestEnv::new().await;
    let game = env.game("lease");
    let store = LeaseStore::new(env.infra.redis.clone(), Duration::from_millis(600));
    let lease = store.try_acquire(&game).await.unwrap().expect("free lease");
    assert!(
        store.try_acquire(&game).await.unwrap().is_none(),
        "exclusive"
    );
    // Held for several TTLs: the renewal keeps it (a long pull cannot lose it).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(store.is_held(&game).await.unwrap());
    assert!(!lease.is_lost());
    // Someone else's token is never deleted by our release.
    let mut conn = env.redis().manager();
    let _: () = redis::cmd("SET")
        .arg(lease_key(&game))
        .arg("other-token")
        .query_async(&mut conn)
        .await
        .unwrap();
    lease.release().await;
    assert!(
        store.is_held(&game).await.unwrap(),
        "a foreign token survives our release"
    );
    let _: () = redis::cmd("DEL")
        .arg(lease_key(&game))
        .query_async(&mut conn)
        .await
        .unwrap();
    let key: String = lease_key(&game);
    assert_eq!(key, format!("rtmanager:game_lease:{}", game.key_segment()));
}

#[tokio::test]
async fn a_cancelled_holder_releases_its_lease() {
    let env = TestEnv::new().await;
    let game = env.game("cancel");
    let store = LeaseStore::new(env.infra.redis.clone(), Duration::from_secs(60));
    let holder = {
        let (store, game) = (store.clone(), game.clone());
        tokio::spawn(async move {
            let _lease = store.try_acquire(&game).await.unwrap().expect("free lease");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    };
    env.eventually("the lease taken", Duration::from_secs(5), || async {
        store.is_held(&game).await.unwrap().then_some(())
    })
    .await;
    holder.abort();
    env.eventually("the lease released", Duration::from_secs(5), || async {
        (!store.is_held(&game).await.unwrap()).then_some(())
    })
    .await;
}

/// A holder whose renewals keep failing (Redis away) past the TTL marks its
/// lease lost: wherever Redis is, the lease has expired there, and another
/// holder may have it. (The renewal keeps trying within the TTL.)
#[tokio::test]
async fn a_lease_whose_renewal_keeps_failing_past_its_ttl_is_marked_lost() {
    let env = TestEnv::new().await;
    let mut private = PrivateRedis::start();
    let redis = shared::adapters::redis::RedisClient::connect(
        &private.addr(),
        &shared::config::Secret::default(),
    )
    .await
    .unwrap();
    let game = env.game("renewfails");
    let store = LeaseStore::new(redis, Duration::from_millis(900));
    let lease = store.try_acquire(&game).await.unwrap().expect("free lease");
    assert!(!lease.is_lost());
    private.stop();
    env.eventually("the lease marked lost", Duration::from_secs(60), || async {
        lease.is_lost().then_some(())
    })
    .await;
}
