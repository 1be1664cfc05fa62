//! In-memory [`Engine`] for unit tests and the reconcile benchmark. It keeps
//! containers in a map, counts calls and can be told to fail.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ContainerInfo, Engine, EngineError, EngineResult, ExecOutput};
use crate::spec::ContainerSpec;

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// What `inspect` returns.
    pub info: ContainerInfo,
    /// The spec it was created from.
    pub spec: ContainerSpec,
    /// Frozen by `pause`.
    pub paused: bool,
}

/// Call counters, for assertions.
#[derive(Debug, Default)]
pub struct FakeCounters {
    /// `create` calls that succeeded.
    pub creates: AtomicU64,
    /// `start` calls.
    pub starts: AtomicU64,
    /// `stop` calls.
    pub stops: AtomicU64,
    /// `remove` calls that removed something.
    pub removes: AtomicU64,
    /// `exec` calls.
    pub execs: AtomicU64,
    /// `pause` calls that froze a container.
    pub pauses: AtomicU64,
}

/// The fake engine.
#[derive(Debug, Default)]
pub struct FakeEngine {
    containers: Mutex<BTreeMap<String, FakeContainer>>,
    images: Mutex<HashSet<String>>,
    fail_create: Mutex<HashSet<String>>,
    /// Call counters.
    pub counters: FakeCounters,
    next_id: AtomicU64,
}

impl FakeEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every `create` of container `name` fail until cleared.
    pub fn fail_creates_of(&self, name: &str, fail: bool) {
        let mut set = self.fail_create.lock().expect("lock");
        if fail {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
    }

    /// A snapshot of the containers.
    pub fn containers(&self) -> BTreeMap<String, FakeContainer> {
        self.containers.lock().expect("lock").clone()
    }

    /// Marks a container stopped, as if it crashed.
    pub fn crash(&self, name: &str) {
        if let Some(c) = self.containers.lock().expect("lock").get_mut(name) {
            c.info.running = false;
        }
    }

    /// Removes a container behind the agent's back.
    pub fn vanish(&self, name: &str) {
        self.containers.lock().expect("lock").remove(name);
    }

    /// Adds a container directly, as if left by an earlier agent.
    pub fn insert(&self, spec: ContainerSpec, running: bool) {
        let id = format!("fake-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let info = ContainerInfo {
            id,
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            running,
            image: spec.image.clone(),
        };
        self.containers.lock().expect("lock").insert(
            spec.name.clone(),
            FakeContainer {
                info,
                spec,
                paused: false,
            },
        );
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut FakeContainer) -> T) -> EngineResult<T> {
        let mut map = self.containers.lock().expect("lock");
        map.get_mut(name)
            .map(f)
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn ping(&self) -> EngineResult<()> {
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        if self.fail_create.lock().expect("lock").contains(&spec.name) {
            return Err(EngineError::Other(format!(
                "injected create failure for {}",
                spec.name
            )));
        }
        if self
            .containers
            .lock()
            .expect("lock")
            .contains_key(&spec.name)
        {
            return Err(EngineError::Conflict(format!("name {} in use", spec.name)));
        }
        self.insert(spec.clone(), false);
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        Ok(self.containers.lock().expect("lock")[&spec.name]
            .info
            .id
            .clone())
    }

    async fn pause(&self, name: &str) -> EngineResult<()> {
        self.with(name, |c| {
            if !c.info.running {
                return Err(EngineError::Conflict(format!("{name} is not running")));
            }
            if !c.paused {
                c.paused = true;
                self.counters.pauses.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?
    }

    async fn unpause(&self, name: &str) -> EngineResult<()> {
        self.with(name, |c| c.paused = false)
    }

    async fn start(&self, name: &str) -> EngineResult<()> {
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        self.with(name, |c| c.info.running = true)
    }

    async fn stop(&self, name: &str, _timeout: Duration) -> EngineResult<()> {
        self.counters.stops.fetch_add(1, Ordering::Relaxed);
        self.with(name, |c| {
            c.info.running = false;
            c.paused = false;
        })
    }

    async fn restart(&self, name: &str, _timeout: Duration) -> EngineResult<()> {
        self.with(name, |c| c.info.running = true)
    }

    async fn remove(&self, name: &str) -> EngineResult<()> {
        match self.containers.lock().expect("lock").remove(name) {
            Some(_) => {
                self.counters.removes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => Err(EngineError::NotFound(name.to_owned())),
        }
    }

    async fn inspect(&self, name: &str) -> EngineResult<Option<ContainerInfo>> {
        Ok(self
            .containers
            .lock()
            .expect("lock")
            .get(name)
            .map(|c| c.info.clone()))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        Ok(self
            .containers
            .lock()
            .expect("lock")
            .values()
            .filter(|c| {
                labels
                    .iter()
                    .all(|(k, v)| c.info.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|c| c.info.clone())
            .collect())
    }

    async fn exec(
        &self,
        name: &str,
        cmd: &[&str],
        _timeout: Duration,
        _max_output: usize,
    ) -> EngineResult<ExecOutput> {
        self.counters.execs.fetch_add(1, Ordering::Relaxed);
        let running = self.with(name, |c| c.info.running)?;
        if !running {
            return Err(EngineError::Conflict(format!("{name} is not running")));
        }
        let stdout = match cmd {
            ["getprop", "sys.boot_completed"] => b"1\n".to_vec(),
            ["pm", "install", ..] => b"Success\n".to_vec(),
            _ => Vec::new(),
        };
        Ok(ExecOutput {
            exit_code: Some(0),
            stdout,
            ..Default::default()
        })
    }

    async fn upload_tar(&self, name: &str, _dir: &str, _tar: Bytes) -> EngineResult<()> {
        self.with(name, |_| ())
    }

    async fn download_tar(&self, name: &str, path: &str, _max: usize) -> EngineResult<Bytes> {
        self.with(name, |_| ())?;
        Err(EngineError::NotFound(path.to_owned()))
    }

    async fn commit(
        &self,
        name: &str,
        repo: &str,
        tag: &str,
        _labels: &BTreeMap<String, String>,
    ) -> EngineResult<String> {
        self.with(name, |_| ())?;
        let reference = format!("{repo}:{tag}");
        self.images.lock().expect("lock").insert(reference.clone());
        Ok(reference)
    }

    async fn image_exists(&self, reference: &str) -> EngineResult<bool> {
        Ok(self.images.lock().expect("lock").contains(reference))
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        self.images.lock().expect("lock").remove(reference);
        Ok(())
    }
}
