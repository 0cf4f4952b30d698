//! The service future: starts handlers and listeners, feeds reports to the
//! [`ServiceHandle`], and runs the graceful shutdown.

pub(crate) mod admission;
pub(crate) mod connection;
pub(crate) mod dial_limit;
mod handle;
pub(crate) mod listen;
pub(crate) mod pairing;
pub(crate) mod shared;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

pub use handle::{ServiceContext, ServiceEvent, ServiceEvents, ServiceHandle, ServiceReport};
use shoal_transport::Multiaddr;
use tokio::sync::mpsc;

use crate::{
    ProtocolEvent, ProtocolId, ServiceControl,
    protocol::task::{self, TaskHandler},
};
use shared::{Report, Shared};

/// A handler task waiting for the service to start.
pub(crate) struct PendingHandler {
    pub(crate) protocol: ProtocolId,
    pub(crate) handler: TaskHandler,
    pub(crate) rx: mpsc::Receiver<ProtocolEvent>,
}

/// The running service: a future to spawn (or poll). It completes after
/// [`ServiceControl::shutdown`] has closed everything.
///
/// Nothing runs until it is polled: protocol handlers start, the
/// builder's listen addresses are bound, and service events reach the
/// [`ServiceHandle`]. Dropping it starts a shutdown that no one waits for.
pub struct Service {
    control: ServiceControl,
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("peer_id", &self.control.local_peer_id())
            .finish_non_exhaustive()
    }
}

impl Service {
    pub(crate) fn new(
        shared: Arc<Shared>,
        handle: Box<dyn ServiceHandle>,
        handlers: Vec<PendingHandler>,
        reports: mpsc::Receiver<Report>,
        listen: Vec<Multiaddr>,
    ) -> Service {
        let control = ServiceControl {
            shared: shared.clone(),
        };
        let future = Box::pin(run(control.clone(), handle, handlers, reports, listen));
        Service { control, future }
    }

    /// A control handle (cheap to clone).
    pub fn control(&self) -> ServiceControl {
        self.control.clone()
    }
}

impl Future for Service {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

/// Marks the service stopped however its future ends (completion or drop).
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
        for entry in &self.0.protocols {
            entry.close_sink();
        }
        self.0.stopped.cancel();
    }
}

fn dispatch(handle: &mut dyn ServiceHandle, control: &ServiceControl, report: Report) {
    let mut ctx = ServiceContext { control };
    // A panicking user handle must not take the service down with it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match report {
        Report::Event(e) => handle.handle_event(&mut ctx, e),
        Report::Error(e) => handle.handle_error(&mut ctx, e),
    }));
    if result.is_err() {
        tracing::error!("the ServiceHandle panicked; the report was dropped");
    }
}

async fn run(
    control: ServiceControl,
    mut handle: Box<dyn ServiceHandle>,
    handlers: Vec<PendingHandler>,
    mut reports: mpsc::Receiver<Report>,
    listen: Vec<Multiaddr>,
) {
    let shared = control.shared.clone();
    let _guard = StopGuard(shared.clone());
    for h in handlers {
        shared
            .handler_tasks
            .spawn(task::run(control.clone(), h.protocol, h.handler, h.rx));
    }
    for addr in listen {
        if let Err(e) = control.try_listen(addr) {
            tracing::warn!(error = %e, "cannot start a configured listener");
        }
    }
    tracing::debug!(peer = %control.local_peer_id(), "service running");

    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            report = reports.recv() => match report {
                Some(report) => dispatch(handle.as_mut(), &control, report),
                None => break,
            },
        }
    }

    // Shutdown: listeners and sessions watch `shutdown` and close; keep
    // dispatching their reports until they are all gone.
    tracing::debug!("service shutting down");
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
    shared.tasks.close();
    drain_until(
        handle.as_mut(),
        &control,
        &mut reports,
        shared.tasks.wait(),
        deadline,
    )
    .await;
    // No session is left: handler queues can end.
    for entry in &shared.protocols {
        entry.close_sink();
    }
    shared.handler_tasks.close();
    drain_until(
        handle.as_mut(),
        &control,
        &mut reports,
        shared.handler_tasks.wait(),
        deadline,
    )
    .await;
    while let Ok(report) = reports.try_recv() {
        dispatch(handle.as_mut(), &control, report);
    }
    tracing::debug!("service stopped");
}

/// Dispatches reports until `done` completes or `deadline` passes.
async fn drain_until(
    handle: &mut dyn ServiceHandle,
    control: &ServiceControl,
    reports: &mut mpsc::Receiver<Report>,
    done: impl Future<Output = ()>,
    deadline: tokio::time::Instant,
) {
    tokio::pin!(done);
    loop {
        tokio::select! {
            biased;
            report = reports.recv() => match report {
                Some(report) => dispatch(handle, control, report),
                None => return,
            },
            () = &mut done => return,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!("shutdown timeout reached; giving up waiting for tasks");
                return;
            }
        }
    }
}
