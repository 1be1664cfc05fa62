//! Access to the container engine behind a small trait, so the reconcile
//! logic runs unchanged against Docker, Podman's Docker-compatible API
//! ([`docker::DockerEngine`]) and an in-memory fake ([`fake::FakeEngine`]).

pub mod docker;
pub mod fake;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::spec::ContainerSpec;

/// Errors from the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such container or image.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is taken or the container is in the wrong state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An exec did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The engine could not be reached or answered with an error.
    #[error("engine error: {0}")]
    Other(String),
}

/// Result alias of engine calls.
pub type EngineResult<T> = Result<T, EngineError>;

/// What the agent needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it runs.
    pub running: bool,
    /// Image it was created from.
    pub image: String,
}

/// Output of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Exit code, if it finished.
    pub exit_code: Option<i64>,
    /// Standard output, at most the cap.
    pub stdout: Vec<u8>,
    /// Standard error, at most the cap.
    pub stderr: Vec<u8>,
    /// Whether output was cut at the cap.
    pub truncated: bool,
}

/// The container-engine calls the agent makes. Every method is safe to
/// repeat: callers treat `NotFound` on removal and `Conflict` on creation as
/// "already done".
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Checks the engine answers.
    async fn ping(&self) -> EngineResult<()>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String>;
    /// Starts a container; starting a running one succeeds.
    async fn start(&self, name: &str) -> EngineResult<()>;
    /// Stops a container, waiting up to `timeout` before killing it.
    async fn stop(&self, name: &str, timeout: Duration) -> EngineResult<()>;
    /// Freezes every process of a running container (the cgroup freezer);
    /// pausing a paused one succeeds.
    async fn pause(&self, name: &str) -> EngineResult<()>;
    /// Thaws a paused container; unpausing one that is not paused succeeds.
    async fn unpause(&self, name: &str) -> EngineResult<()>;
    /// Restarts a container.
    async fn restart(&self, name: &str, timeout: Duration) -> EngineResult<()>;
    /// Removes a container, stopping it first.
    async fn remove(&self, name: &str) -> EngineResult<()>;
    /// One container, or `None` when it does not exist.
    async fn inspect(&self, name: &str) -> EngineResult<Option<ContainerInfo>>;
    /// Every container (running or not) whose labels include all of `labels`.
    async fn list(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>>;
    /// Runs `cmd` in a running container, cutting output at `max_output`
    /// bytes per stream and giving up after `timeout`.
    async fn exec(
        &self,
        name: &str,
        cmd: &[&str],
        timeout: Duration,
        max_output: usize,
    ) -> EngineResult<ExecOutput>;
    /// Unpacks a tar archive into directory `dir` of the container.
    async fn upload_tar(&self, name: &str, dir: &str, tar: Bytes) -> EngineResult<()>;
    /// Downloads `path` from the container as a tar archive.
    async fn download_tar(&self, name: &str, path: &str, max_bytes: usize) -> EngineResult<Bytes>;
    /// Commits a container to `repo:tag` with the given labels; returns the image id.
    async fn commit(
        &self,
        name: &str,
        repo: &str,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<String>;
    /// Whether an image exists locally.
    async fn image_exists(&self, reference: &str) -> EngineResult<bool>;
    /// Removes an image.
    async fn remove_image(&self, reference: &str) -> EngineResult<()>;
}
