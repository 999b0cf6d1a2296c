//! Stopping on request. A long-running command (`serve`, `worker`, `sim`,
//! a progress page) stops at Ctrl-C and, on Unix, at SIGTERM: what `kill`,
//! systemd, container runtimes and test harnesses send. Either way its
//! shutdown runs, so workers drain and a throwaway simulator's temporary
//! directory (its CA's private key among the files) is removed.

/// Resolves at the first Ctrl-C or SIGTERM.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
