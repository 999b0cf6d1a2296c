//! The progress pages on a local port, for `status --web` and `up --open`:
//! the browser front door of `flotilla serve` (`GET api/view`,
//! `GET api/clusters/{id}/view` and the `status` JSON they poll) on
//! 127.0.0.1, over an engine of the local data dir.

use crate::serve::{self, AppState, Limits};
use flotilla_core::engine::Engine;
use std::sync::Arc;

/// A running page server; it stops when [`PageServer::stop`] is called.
pub struct PageServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Serves the pages of `engine`'s jobs on 127.0.0.1:`port` (0: a free port).
    pub async fn start(engine: Arc<Engine>, port: u16) -> Result<PageServer, crate::error::Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("page server: {e}"))?
            .port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = serve::pages(AppState::new(engine));
        let task = tokio::spawn(serve::serve(listener, app, Limits::default(), async {
            let _ = stopped.await;
        }));
        Ok(PageServer {
            base: format!("http://127.0.0.1:{port}"),
            stop,
            task,
        })
    }

    /// The progress page of `job`.
    pub fn job_url(&self, job: &str) -> String {
        format!("{}/api/clusters/{job}/view", self.base)
    }

    /// Stops serving (requests in flight finish first).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
