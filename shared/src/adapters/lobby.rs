//! Lobby's internal API (reqwest): a best-effort diagnostic fetch of the game
//! before a start, as the Go service did. It never fails a start.

use std::time::Duration;

use crate::domain::GameId;

/// Best-effort diagnostic GET of the game at Lobby; never fails a start.
#[derive(Clone)]
pub struct LobbyClient {
    http: reqwest::Client,
    base_url: String,
}

impl LobbyClient {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub async fn log_game(&self, game_id: &GameId) {
        let url = format!("{}/api/v1/internal/games/{}", self.base_url, game_id);
        match self.http.get(&url).send().await {
            Ok(resp) => {
                tracing::debug!(game_id = %game_id, status = resp.status().as_u16(), "lobby diagnostic fetched")
            }
            Err(e) => {
                tracing::debug!(game_id = %game_id, error = %e, "lobby diagnostic fetch failed")
            }
        }
    }
}
