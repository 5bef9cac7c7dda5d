//! `rest-gateway` (being written).

pub mod routes;
pub mod state;
