//! The peer of the footprint benchmark (`bench-footprint`): the smallest
//! useful process on the same stack, a tokio multi-thread runtime and a
//! hyper HTTP/1 server answering `/healthz` with 200 on the address given
//! as its only argument. Nothing else: no Redis, PostgreSQL or Docker.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
