//! `cleanup-cron` binary: one cleanup pass, or `--every [DURATION]`.

use cleanup_cron::Schedule;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if shared::healthcheck::requested() {
        return shared::healthcheck::run().await;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let every = match cleanup_cron::parse_args(&args)? {
        Schedule::Help => {
            println!("{}", cleanup_cron::USAGE);
            return Ok(());
        }
        Schedule::Once => None,
        Schedule::Every(every) => Some(every),
    };
    let (config, infra, shutdown) =
        shared::bootstrap::process_with::<cleanup_cron::CleanupCronConfig>(false, every.is_some())
            .await?;
    let every = every.map(|e| e.unwrap_or(config.cleanup.interval));
    cleanup_cron::run(config, infra, every, shutdown).await
}
