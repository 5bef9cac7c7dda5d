//! Docker adapter of [`ContainerEngine`], on bollard.
//!
//! bollard errors are mapped here, once: transport failures become
//! [`EngineError::Unavailable`] (the `docker_unavailable` code), daemon answers
//! become `NotFound`, `Conflict` or `Rejected`. The event subscription is
//! the one request made without bollard (`events.rs` says why).

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use crate::domain::labels::{LABEL_OWNER, LABEL_OWNER_VALUE};
use crate::domain::ContainerState;
use crate::telemetry::steps;

mod decode;
mod events;
use crate::ports::{
    ContainerEngine, ContainerInfo, ContainerSpec, ContainerStats, ContainerSummary, EngineError,
    EngineEvents, HealthInfo, ImageInfo, LogChunks, LogOptions, PullPolicy,
};
use decode::{container_info, container_stats, health_info};

/// Seconds bollard waits for one request; pulls stream, so this bounds a stall.
const REQUEST_TIMEOUT_SECS: u64 = 120;

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// The event subscription is made without bollard ([`events`] says why).
    events_endpoint: events::Endpoint,
}

impl DockerEngine {
    /// `unix:///var/run/docker.sock` or `tcp://host:port` (plain HTTP), as
    /// `RTMANAGER_DOCKER_HOST`.
    pub fn connect(host: &str) -> Result<Self, EngineError> {
        let docker = if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| EngineError::Unavailable(format!("{host}: {e}")))?;
        Ok(Self {
            docker,
            events_endpoint: events::Endpoint::parse(host),
        })
    }
}

pub(crate) fn map_error(err: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => EngineError::NotFound(message),
            409 => EngineError::Conflict(message),
            _ => EngineError::Rejected(message),
        },
        // An error inside a stream the daemon had begun to answer (a pull's
        // progress: manifest unknown, denied, a missing blob) is the
        // daemon's answer, not a daemon out of reach.
        E::DockerStreamError { .. }
        | E::DockerContainerWaitError { .. }
        | E::JsonDataError { .. }
        | E::JsonSerdeError { .. } => EngineError::Rejected(err.to_string()),
        other => EngineError::Unavailable(other.to_string()),
    }
}

fn not_found_is_none<T>(res: Result<T, bollard::errors::Error>) -> Result<Option<T>, EngineError> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) => match map_error(e) {
            EngineError::NotFound(_) => Ok(None),
            other => Err(other),
        },
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await.map(drop).map_err(map_error)
    }

    async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(not_found_is_none(self.docker.inspect_network(name, None).await)?.is_some())
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError> {
        let present = not_found_is_none(self.docker.inspect_image(image).await)?.is_some();
        match policy {
            PullPolicy::Never if present => return Ok(()),
            PullPolicy::Never => {
                return Err(EngineError::NotFound(format!(
                    "image {image} is not present and the pull policy is never"
                )))
            }
            PullPolicy::IfMissing if present => return Ok(()),
            PullPolicy::IfMissing | PullPolicy::Always => {}
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| match map_error(e) {
                EngineError::Unavailable(m) => EngineError::Unavailable(m),
                other => EngineError::Rejected(format!("pull {image}: {other}")),
            })
    }

    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError> {
        let resp = self.docker.inspect_image(image).await.map_err(map_error)?;
        Ok(ImageInfo {
            id: resp.id.unwrap_or_default(),
            labels: resp.config.and_then(|c| c.labels).unwrap_or_default(),
        })
    }

    async fn containers_of_image(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        // Every container, not only rtmanager's: an image another container
        // was made from is in use whoever made it.
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(map_error)?;
        Ok(listed
            .into_iter()
            .filter(|c| c.image_id.as_deref() == Some(image_id))
            .filter_map(|c| c.id)
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .build();
        self.docker
            .remove_image(image, Some(options), None)
            .await
            .map(drop)
            .map_err(map_error)
    }

    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerInfo>, EngineError> {
        Ok(
            not_found_is_none(self.docker.inspect_container(id_or_name, None).await)?
                .map(container_info),
        )
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        let host_config = HostConfig {
            binds: Some(
                spec.mounts
                    .iter()
                    .map(|m| format!("{}:{}:rw", m.host_path, m.container_path))
                    .collect(),
            ),
            network_mode: Some(spec.network.clone()),
            nano_cpus: Some(spec.limits.cpu.nano_cpus()),
            memory: Some(spec.limits.memory.bytes()),
            pids_limit: Some(spec.limits.pids.get()),
            log_config: Some(HostConfigLogConfig {
                typ: Some(spec.log_driver.clone()),
                config: (!spec.log_opts.is_empty()).then(|| spec.log_opts.clone()),
            }),
            // No host port is ever published: the engine is reached over the network.
            publish_all_ports: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            hostname: Some(spec.hostname.clone()),
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(map_error)?;
        steps::mark("create");
        crate::failpoints::crash_point("docker-after-create");
        if let Err(start_err) = self.docker.start_container(&created.id, None).await {
            // Never leave a created-but-not-started container behind.
            let _ = self.remove(&created.id).await;
            return Err(match map_error(start_err) {
                EngineError::Unavailable(m) => EngineError::Unavailable(m),
                other => EngineError::Rejected(format!("start container: {other}")),
            });
        }
        steps::mark("start");
        let inspected = self.inspect_container(&created.id).await;
        steps::mark("inspect_started");
        match inspected {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(EngineError::Rejected(format!(
                "container {} vanished right after start",
                created.id
            ))),
            Err(e) => {
                let _ = self.remove(&created.id).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(map_error)
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(id, Some(options))
            .await
            .map_err(map_error)
        {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            // A removal already under way is as good as done.
            Err(EngineError::Conflict(m)) if m.contains("already in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, id: &str, timeout: std::time::Duration) -> Result<(), EngineError> {
        let options = StopContainerOptionsBuilder::default()
            .t(timeout.as_secs().min(i32::MAX as u64) as i32)
            .build();
        match self
            .docker
            .stop_container(id, Some(options))
            .await
            .map_err(map_error)
        {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_OWNER}={LABEL_OWNER_VALUE}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(map_error)?;
        Ok(listed
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                labels: c.labels.unwrap_or_default(),
                state: c
                    .state
                    .map(|s| ContainerState::parse(s.as_ref()))
                    .unwrap_or_default(),
                networks: {
                    let mut names: Vec<String> = c
                        .network_settings
                        .and_then(|n| n.networks)
                        .map(|n| n.into_keys().collect())
                        .unwrap_or_default();
                    names.sort();
                    names
                },
            })
            .collect())
    }

    async fn subscribe_events(&self, since_nano: Option<i64>) -> Result<EngineEvents, EngineError> {
        events::subscribe(
            &self.events_endpoint,
            since_nano,
            std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS),
        )
        .await
    }

    async fn daemon_id(&self) -> Result<String, EngineError> {
        let info = self.docker.info().await.map_err(map_error)?;
        info.id
            .filter(|id| !id.is_empty())
            .or(info.name)
            .ok_or_else(|| EngineError::Rejected("the daemon reports no id".into()))
    }

    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError> {
        // `stream=false` is one answer. `one-shot` (API 1.41) would skip the
        // daemon's second sample and leave no CPU delta to compute a percent
        // from, so the daemon is let take its two samples (about a second).
        let options = bollard::query_parameters::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let sample = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| {
                EngineError::Unavailable(format!("stats of {id}: the daemon sent no sample"))
            })?
            .map_err(map_error)?;
        Ok(container_stats(&sample))
    }

    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks {
        let query = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps)
            .tail(&options.tail.to_string())
            .build();
        Box::pin(
            self.docker
                .logs(id, Some(query))
                .map(|item| item.map(|out| out.into_bytes().to_vec()).map_err(map_error)),
        )
    }

    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError> {
        Ok(not_found_is_none(self.docker.inspect_container(id, None).await)?.map(health_info))
    }
}
