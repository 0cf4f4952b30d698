//! The task running one protocol's handler (service-wide, or the instances
//! of a per-session handler): events from a bounded queue in, callbacks
//! out, timers in between. Panics are caught per callback.

use std::{collections::HashMap, panic::AssertUnwindSafe, sync::Arc};

use tokio::{sync::mpsc, time::Instant};

use super::{ProtocolContext, ProtocolContextMut, ProtocolEvent, ServiceProtocol, SessionFactory};
use crate::{
    HandlerError, HandlerResult, ProtocolId, ServiceControl, ServiceError, SessionId, SessionInfo,
    SessionProtocol,
};

/// The handler a task drives.
pub(crate) enum TaskHandler {
    Service(Box<dyn ServiceProtocol>),
    Session(SessionFactory),
}

struct Instance {
    handler: Box<dyn SessionProtocol>,
    session: Arc<SessionInfo>,
}

/// A failed callback.
struct Failure {
    session: Option<Arc<SessionInfo>>,
    error: HandlerError,
    /// The whole protocol must be disabled.
    fatal: bool,
}

fn call(f: impl FnOnce() -> HandlerResult) -> Result<(), HandlerError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandlerError::Returned(e)),
        Err(panic) => Err(HandlerError::Panicked(panic_message(panic.as_ref()))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

struct Runner {
    control: ServiceControl,
    protocol: ProtocolId,
    ctx: ProtocolContext,
    service: Option<Box<dyn ServiceProtocol>>,
    factory: Option<SessionFactory>,
    instances: HashMap<SessionId, Instance>,
}

/// Runs a handler until its queue closes (service stopped) or it fails
/// fatally.
pub(crate) async fn run(
    control: ServiceControl,
    protocol: ProtocolId,
    handler: TaskHandler,
    mut rx: mpsc::Receiver<ProtocolEvent>,
) {
    let (service, factory) = match handler {
        TaskHandler::Service(h) => (Some(h), None),
        TaskHandler::Session(f) => (None, Some(f)),
    };
    let mut runner = Runner {
        ctx: ProtocolContext::new(control.clone(), protocol),
        control,
        protocol,
        service,
        factory,
        instances: HashMap::new(),
    };
    if let Some(h) = runner.service.as_mut() {
        let ctx = &mut runner.ctx;
        if let Err(error) = call(|| h.init(ctx)) {
            let failure = Failure {
                session: None,
                error,
                fatal: true,
            };
            runner.fail(failure).await;
            return;
        }
    }
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    loop {
        let deadline = runner.ctx.timers.next_deadline();
        if let Some(d) = deadline.filter(|d| sleep.deadline() != *d) {
            sleep.as_mut().reset(d);
        }
        let failures = tokio::select! {
            biased;
            () = &mut sleep, if deadline.is_some() => runner.fire_timers(),
            event = rx.recv() => match event {
                Some(event) => runner.dispatch(event),
                None => break,
            },
        };
        let mut fatal = false;
        for failure in failures {
            fatal |= failure.fatal;
            runner.fail(failure).await;
        }
        if fatal {
            break;
        }
    }
    tracing::debug!(protocol = %protocol, "handler task finished");
}

impl Runner {
    /// Reports a failure and closes what it concerns.
    async fn fail(&mut self, failure: Failure) {
        let shared = &self.control.shared;
        if failure.fatal {
            tracing::warn!(protocol = %self.protocol, error = %failure.error, "protocol handler failed; disabling the protocol");
            shared.disable_protocol(self.protocol);
        } else if let Some(session) = &failure.session {
            let _ = self.control.close_protocol(session.id, self.protocol);
        }
        shared
            .report_error(ServiceError::Handler {
                protocol: self.protocol,
                session: failure.session.as_ref().map(|s| s.id),
                peer: failure.session.as_ref().map(|s| s.peer),
                error: failure.error,
            })
            .await;
    }

    fn dispatch(&mut self, event: ProtocolEvent) -> Vec<Failure> {
        if let Some(h) = self.service.as_mut() {
            self.ctx.scope = None;
            let (session, result) = match event {
                ProtocolEvent::DialFailed { peer, error } => {
                    let ctx = &mut self.ctx;
                    return match call(|| h.dial_failed(ctx, peer, &error)) {
                        Ok(()) => Vec::new(),
                        Err(error) => vec![Failure {
                            session: None,
                            error,
                            fatal: true,
                        }],
                    };
                }
                ProtocolEvent::Connected { session, version } => {
                    let r = call(|| {
                        h.connected(
                            &mut ProtocolContextMut::new(&mut self.ctx, &session),
                            version,
                        )
                    });
                    (session, r)
                }
                ProtocolEvent::Received { session, data } => {
                    let r = call(|| {
                        h.received(&mut ProtocolContextMut::new(&mut self.ctx, &session), data)
                    });
                    (session, r)
                }
                ProtocolEvent::Disconnected { session } => {
                    let r = call(|| {
                        h.disconnected(&mut ProtocolContextMut::new(&mut self.ctx, &session))
                    });
                    (session, r)
                }
            };
            return match result {
                Ok(()) => Vec::new(),
                Err(error) => {
                    let fatal = matches!(error, HandlerError::Panicked(_));
                    vec![Failure {
                        session: Some(session),
                        error,
                        fatal,
                    }]
                }
            };
        }
        self.dispatch_session(event).into_iter().collect()
    }

    fn dispatch_session(&mut self, event: ProtocolEvent) -> Option<Failure> {
        let (session, result) = match event {
            ProtocolEvent::Connected { session, version } => {
                let factory = self.factory.as_ref()?;
                let handler = match call_factory(factory) {
                    Ok(h) => h,
                    Err(error) => return Some(self.drop_instance(session, error)),
                };
                let instance = self.instances.entry(session.id).or_insert(Instance {
                    handler,
                    session: session.clone(),
                });
                self.ctx.scope = Some(session.id);
                let mut ctx = ProtocolContextMut::new(&mut self.ctx, &instance.session);
                let h = &mut instance.handler;
                (session, call(|| h.connected(&mut ctx, version)))
            }
            ProtocolEvent::Received { session, data } => {
                // No instance: it failed earlier; its close is on the way.
                let instance = self.instances.get_mut(&session.id)?;
                self.ctx.scope = Some(session.id);
                let mut ctx = ProtocolContextMut::new(&mut self.ctx, &instance.session);
                let h = &mut instance.handler;
                (session, call(|| h.received(&mut ctx, data)))
            }
            ProtocolEvent::Disconnected { session } => {
                let mut instance = self.instances.remove(&session.id)?;
                self.ctx.timers.remove_scope(Some(session.id));
                self.ctx.scope = Some(session.id);
                let mut ctx = ProtocolContextMut::new(&mut self.ctx, &instance.session);
                let h = &mut instance.handler;
                return call(|| h.disconnected(&mut ctx))
                    .err()
                    .map(|error| Failure {
                        session: Some(session),
                        error,
                        fatal: false,
                    });
            }
            // Per-session instances have no session to tell.
            ProtocolEvent::DialFailed { .. } => return None,
        };
        result.err().map(|error| self.drop_instance(session, error))
    }

    /// Drops the instance of a session after a failure; the protocol is
    /// closed on that session by [`Runner::fail`].
    fn drop_instance(&mut self, session: Arc<SessionInfo>, error: HandlerError) -> Failure {
        self.instances.remove(&session.id);
        self.ctx.timers.remove_scope(Some(session.id));
        Failure {
            session: Some(session),
            error,
            fatal: false,
        }
    }

    fn fire_timers(&mut self) -> Vec<Failure> {
        let now = Instant::now();
        let mut failures = Vec::new();
        while let Some((scope, token)) = self.ctx.timers.pop_due(now) {
            self.ctx.scope = scope;
            match scope {
                None => {
                    let Some(h) = self.service.as_mut() else {
                        continue;
                    };
                    let ctx = &mut self.ctx;
                    if let Err(error) = call(|| h.notify(ctx, token)) {
                        // A service-wide timer failing has no session to
                        // blame: the handler is broken.
                        failures.push(Failure {
                            session: None,
                            error,
                            fatal: true,
                        });
                        return failures;
                    }
                }
                Some(id) => {
                    let Some(instance) = self.instances.get_mut(&id) else {
                        self.ctx.timers.remove_scope(scope);
                        continue;
                    };
                    let mut ctx = ProtocolContextMut::new(&mut self.ctx, &instance.session);
                    let h = &mut instance.handler;
                    if let Err(error) = call(|| h.notify(&mut ctx, token)) {
                        let session = instance.session.clone();
                        failures.push(self.drop_instance(session, error));
                    }
                }
            }
        }
        failures
    }
}

fn call_factory(factory: &SessionFactory) -> Result<Box<dyn SessionProtocol>, HandlerError> {
    std::panic::catch_unwind(AssertUnwindSafe(factory))
        .map_err(|panic| HandlerError::Panicked(panic_message(panic.as_ref())))
}
