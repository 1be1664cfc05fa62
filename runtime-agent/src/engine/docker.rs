//! [`Engine`] over the Docker Engine API with `bollard`; works against Docker
//! and against Podman's Docker-compatible service.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{ContainerInfo, Engine, EngineError, EngineResult, ExecOutput};
use crate::spec::{ContainerSpec, ADB_CONTAINER_PORT};

/// The Docker-API engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects to `host`: `unix:///path/to.sock` or `tcp://host:port`.
    /// Nothing is sent until the first call.
    pub fn connect(host: &str) -> EngineResult<Self> {
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, 300, bollard::API_DEFAULT_VERSION)
        } else {
            let http = host.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(&http, 300, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| EngineError::Other(format!("cannot connect to engine at {host}: {e}")))?;
        Ok(Self { docker })
    }

    /// The underlying client, for tests and benchmarks that compare with direct calls.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

fn map_err(what: &str, e: bollard::errors::Error) -> EngineError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => EngineError::NotFound(format!("{what}: {message}")),
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => EngineError::Conflict(format!("{what}: {message}")),
        bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message,
        } if message.contains("no such container") => {
            EngineError::NotFound(format!("{what}: {message}"))
        }
        // Podman reports a taken name as 500, Docker as 409.
        bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message,
        } if message.contains("already in use") => {
            EngineError::Conflict(format!("{what}: {message}"))
        }
        other => EngineError::Other(format!("{what}: {other}")),
    }
}

/// Docker answers 304 when a container already is in the asked-for state.
fn not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// A refusal because the container already is as asked (Docker answers 409
/// "is already paused", Podman 409/500 "is paused" / "is not paused").
fn already(e: &bollard::errors::Error, state: &str) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304 | 409 | 500,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            m.contains(&format!("is {state}")) || m.contains(&format!("already {state}"))
        }
        _ => false,
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> EngineResult<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| map_err("ping", e))
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let port_key = format!("{ADB_CONTAINER_PORT}/tcp");
        let mut ports = HashMap::new();
        ports.insert(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.adb_bind_address.clone()),
                host_port: Some(spec.adb_host_port.to_string()),
            }]),
        );
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(HostConfig {
                privileged: Some(spec.privileged),
                binds: Some(vec![format!("{}:/data", spec.data_dir.display())]),
                port_bindings: Some(ports),
                memory: Some(spec.memory_bytes),
                nano_cpus: Some(spec.nano_cpus),
                pids_limit: Some(spec.pids_limit),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let resp = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| map_err(&format!("create {}", spec.name), e))?;
        Ok(resp.id)
    }

    async fn start(&self, name: &str) -> EngineResult<()> {
        match self.docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            Err(e) if not_modified(&e) => Ok(()),
            Err(e) => Err(map_err(&format!("start {name}"), e)),
        }
    }

    async fn stop(&self, name: &str, timeout: Duration) -> EngineResult<()> {
        let opts = StopContainerOptionsBuilder::new().t(secs(timeout)).build();
        match self.docker.stop_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_modified(&e) => Ok(()),
            Err(e) => Err(map_err(&format!("stop {name}"), e)),
        }
    }

    async fn pause(&self, name: &str) -> EngineResult<()> {
        match self.docker.pause_container(name).await {
            Ok(()) => Ok(()),
            // Already paused (Docker answers 409 "is already paused").
            Err(e) if already(&e, "paused") => Ok(()),
            Err(e) => Err(map_err(&format!("pause {name}"), e)),
        }
    }

    async fn unpause(&self, name: &str) -> EngineResult<()> {
        match self.docker.unpause_container(name).await {
            Ok(()) => Ok(()),
            Err(e) if already(&e, "not paused") => Ok(()),
            Err(e) => Err(map_err(&format!("unpause {name}"), e)),
        }
    }

    async fn restart(&self, name: &str, timeout: Duration) -> EngineResult<()> {
        let opts = RestartContainerOptionsBuilder::new()
            .t(secs(timeout))
            .build();
        self.docker
            .restart_container(name, Some(opts))
            .await
            .map_err(|e| map_err(&format!("restart {name}"), e))
    }

    async fn remove(&self, name: &str) -> EngineResult<()> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(name, Some(opts))
            .await
            .map_err(|e| map_err(&format!("remove {name}"), e))
    }

    async fn inspect(&self, name: &str) -> EngineResult<Option<ContainerInfo>> {
        match podman_settled(|| {
            self.docker
                .inspect_container(name, None::<InspectContainerOptions>)
        })
        .await
        {
            Ok(c) => {
                let config = c.config.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                    running: c.state.and_then(|s| s.running).unwrap_or(false),
                    image: config.image.unwrap_or_default(),
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            // Podman answers 500 "no such container" for a container that a
            // concurrent call is still creating or already removing.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message,
            }) if message.contains("no such container") => Ok(None),
            Err(e) => Err(map_err(&format!("inspect {name}"), e)),
        }
    }

    async fn list(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        );
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = podman_settled(|| self.docker.list_containers(Some(opts.clone())))
            .await
            .map_err(|e| map_err("list containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                image: c.image.unwrap_or_default(),
            })
            .collect())
    }

    async fn exec(
        &self,
        name: &str,
        cmd: &[&str],
        timeout: Duration,
        max_output: usize,
    ) -> EngineResult<ExecOutput> {
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    name,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| map_err(&format!("exec in {name}"), e))?;
            let started = self
                .docker
                .start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| map_err(&format!("exec in {name}"), e))?;
            let mut out = ExecOutput::default();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.map_err(|e| map_err(&format!("exec in {name}"), e))?;
                    let (buf, data) = match chunk {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (&mut out.stdout, message)
                        }
                        LogOutput::StdErr { message } => (&mut out.stderr, message),
                        LogOutput::StdIn { .. } => continue,
                    };
                    let room = max_output.saturating_sub(buf.len());
                    if data.len() > room {
                        out.truncated = true;
                    }
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| map_err(&format!("exec in {name}"), e))?;
            out.exit_code = inspect.exit_code;
            Ok(out)
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| EngineError::Timeout(timeout))?
    }

    async fn upload_tar(&self, name: &str, dir: &str, tar: Bytes) -> EngineResult<()> {
        let opts = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.docker
            .upload_to_container(name, Some(opts), bollard::body_full(tar))
            .await
            .map_err(|e| map_err(&format!("upload to {name}:{dir}"), e))
    }

    async fn download_tar(&self, name: &str, path: &str, max_bytes: usize) -> EngineResult<Bytes> {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(name, Some(opts));
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| map_err(&format!("download {name}:{path}"), e))?;
            if buf.len() + chunk.len() > max_bytes {
                return Err(EngineError::Other(format!(
                    "download {name}:{path}: larger than {max_bytes} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    async fn commit(
        &self,
        name: &str,
        repo: &str,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<String> {
        // Podman applies labels on commit only through a Dockerfile-style change.
        let change = format!(
            "LABEL {}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        // The caller pauses a running container itself (and copies /data
        // while it is paused), so the engine must not pause or unpause it.
        let mut opts = CommitContainerOptionsBuilder::new()
            .container(name)
            .pause(false)
            .repo(repo)
            .tag(tag);
        if !labels.is_empty() {
            opts = opts.changes(&change);
        }
        let resp = self
            .docker
            .commit_container(opts.build(), bollard::models::ContainerConfig::default())
            .await
            .map_err(|e| map_err(&format!("commit {name}"), e))?;
        Ok(resp.id)
    }

    async fn image_exists(&self, reference: &str) -> EngineResult<bool> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(map_err(&format!("inspect image {reference}"), e)),
        }
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        // Never forced: Podman would also remove the containers using the image.
        let opts = RemoveImageOptionsBuilder::new().force(false).build();
        self.docker
            .remove_image(reference, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&format!("remove image {reference}"), e))
    }
}

/// Runs an engine call again, for up to 2 s, while its answer does not
/// parse. Podman briefly reports a container it is stopping as `stopped`, a
/// state the Docker API (and bollard) does not have, in lists and inspects
/// alike; asking again a moment later gets `exited` or `running`, rather
/// than failing the caller's pass or operation.
async fn podman_settled<T, F, Fut>(mut call: F) -> Result<T, bollard::errors::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(bollard::errors::Error::JsonDataError { .. }) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
