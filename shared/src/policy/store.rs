//! The policy in force and its reloading.
//!
//! Readers take the current [`PolicySet`] per request (or per batch) with
//! [`PolicyStore::current`]; a reload is one `watch` send, so a request sees either the old or
//! the new set, never a mix. A reload that fails validation logs every error and leaves the
//! running policy untouched.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{PolicySet, load};
use crate::Error;

/// A directory's policy, reloadable.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    tx: watch::Sender<Arc<PolicySet>>,
}

/// What the poller compares to notice a change: each file's name, size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    load::policy_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

impl PolicyStore {
    /// Loads `dir`; fails with every error when it does not validate.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let set = load::load_dir(&dir)?;
        let (tx, _) = watch::channel(Arc::new(set));
        Ok(Self { dir, tx })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.tx.borrow().clone()
    }

    /// Notified on every successful reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicySet>> {
        self.tx.subscribe()
    }

    /// Reloads the directory. On error the current policy stays in force and the error
    /// (listing every problem) is returned for the caller to report.
    pub fn reload(&self) -> Result<(), Error> {
        let set = load::load_dir(&self.dir)?;
        self.tx.send_replace(Arc::new(set));
        Ok(())
    }

    /// Polls the directory every `every` until `shutdown`, reloading when a file appears,
    /// disappears or changes. Polling rather than inotify keeps it working on network and
    /// container-mounted volumes (Kubernetes ConfigMaps swap a symlink).
    pub fn spawn_poller(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        // Taken before spawning: a change made between this call and the task's first poll
        // must still be seen as a change.
        let mut last = fingerprint(&self.dir);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = fingerprint(&self.dir);
                if now == last {
                    continue;
                }
                last = now;
                match self.reload() {
                    Ok(()) => {
                        let set = self.current();
                        tracing::info!(dir = %self.dir.display(), registry_rules = set.registry.rules.len(), topic_rules = set.topics.rules.len(), "policy reloaded");
                    }
                    Err(Error::Policy(errors)) => {
                        for e in &errors {
                            tracing::error!(error = %e, "policy reload refused; previous policy stays in force");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload failed; previous policy stays in force")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "registry:\n  rules:\n    - id: ID\n      principals: [\"*\"]\n      subjects: [\"*\"]\n      operations: [read]\n";

    #[tokio::test]
    async fn poller_reloads_changes_and_keeps_old_policy_on_bad_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.yaml");
        std::fs::write(&file, RULE.replace("ID", "first")).unwrap();
        let store = Arc::new(PolicyStore::load(dir.path()).unwrap());
        let mut rx = store.subscribe();
        let shutdown = CancellationToken::new();
        let poller = store
            .clone()
            .spawn_poller(Duration::from_millis(20), shutdown.clone());

        // A change of size is noticed even where mtime resolution is coarse.
        std::fs::write(&file, RULE.replace("ID", "second-rule")).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .expect("poller noticed the change")
            .unwrap();
        assert_eq!(&*store.current().registry.rules[0].id, "second-rule");

        std::fs::write(&file, RULE.replace("read", "reed")).unwrap();
        assert!(store.reload().is_err());
        assert_eq!(&*store.current().registry.rules[0].id, "second-rule");

        shutdown.cancel();
        poller.await.unwrap();
    }
}
