//! Process signals and the phases of a graceful stop.
//!
//! ```text
//!  Serving ──SIGTERM──► Draining (drain_ms) ──► Stopping (≤ grace_ms) ──► exit
//!            /readyz 503, gRPC health      no new connections;
//!            NOT_SERVING, Checks still     in-flight Checks finish,
//!            answered                      then the process exits
//! ```

use crate::serve::reload::Reloader;
use std::sync::Arc;
use tokio::sync::watch;

/// Where a server is in its stop sequence (ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Normal operation.
    Serving,
    /// Not ready, still answering, so load balancers take the replica out first.
    Draining,
    /// No new connections; in-flight Checks finish within the grace period.
    Stopping,
}

/// Resolves once `rx` has reached `phase` (or its sender is gone).
pub async fn reached(mut rx: watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|p| *p >= phase).await;
}

/// Resolves on `SIGTERM` (Kubernetes) or Ctrl-C.
pub async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reloads on every `SIGHUP`, for the life of the process.
pub fn reload_on_hangup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP received");
                        reloader.trigger();
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only")
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reached_waits_for_the_phase_or_a_later_one() {
        let (tx, rx) = watch::channel(Phase::Serving);
        let waiting = tokio::spawn(reached(rx.clone(), Phase::Draining));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        let _ = tx.send(Phase::Stopping);
        assert!(tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .is_ok());
        // Already past: resolves at once, even with the sender gone.
        drop(tx);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), reached(rx, Phase::Stopping))
                .await
                .is_ok()
        );
    }
}
