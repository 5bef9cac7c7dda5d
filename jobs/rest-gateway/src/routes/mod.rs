//! Route groups. Each module exposes `router() -> Router<AppState>`; `lib.rs`
//! merges them under auth.

pub mod discovery;
pub mod lifecycle;
pub mod observe;
pub mod read;
