//! The reconciler: makes every live backend's observed state follow its record.
//!
//! Each live backend has one supervisor task that starts it (or adopts it after a
//! restart), waits until it listens (`spawner_proxy::readiness`), watches for its exit, and
//! carries out stops. A backend with `idle_action: "sleep"` is stopped for idleness and
//! kept `Sleeping`: no process and no task (it is dormant, `Live::go_dormant`); a wake
//! or stop asked of it ([`wake`], [`stop`]) rouses it, and a woken one (`Waking`) gets a
//! supervisor again. At start-up [`adopt_all`] compares the store with what the runtimes
//! report and acts on the difference, which is what makes a crash of Spawner harmless.

use crate::app::App;
use crate::live::{Live, StopRequest};
use futures_util::future::BoxFuture;
use spawner_core::env::{backend_env, expand};
use spawner_core::lifecycle::{outcome, Exit, StopReason, GOING_TO_SLEEP};
use spawner_core::time::now_millis;
use spawner_core::{BackendId, State};
use spawner_proxy::readiness::{self, ListenWatch};
use spawner_runtime::{Handle, Launch, Runtime, RuntimeError, Signal};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Process starts at once (prepare, fork and exec, record): enough to keep the cores
/// busy; the rest wait parked. Container starts are not limited here (the engine takes
/// its time per start, and queues them itself).
static PROCESS_STARTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// How a supervisor begins.
enum Begin {
    /// Start the backend.
    Start,
    /// It already runs (adopted after a restart).
    Running {
        handle: Handle,
        exited: BoxFuture<'static, Exit>,
    },
    /// Start it again from its spec: it was woken (`Waking`).
    Wake,
}

/// How a run of a backend's process ended.
enum Ran {
    /// The backend ended (its terminal state recorded).
    Ended,
    /// Stopped for idleness, to sleep: why.
    Slept(StopReason),
}

/// Starts supervising a newly submitted backend (counted as it enters `Submitted`).
pub fn launch(app: &Arc<App>, live: Arc<Live>) {
    app.metrics.submitted();
    spawn_supervisor(app, live, Begin::Start);
}

fn spawn_supervisor(app: &Arc<App>, live: Arc<Live>, begin: Begin) {
    let app = app.clone();
    let span = tracing::info_span!("backend", id = %live.id);
    tokio::spawn(
        async move {
            if let Err(e) = supervise(&app, &live, begin).await {
                tracing::error!(error = %e, "supervisor failed");
            }
            if live.state().is_terminal() {
                crate::kept::forget(&app, &live).await;
            }
        }
        .instrument(span),
    );
}

async fn supervise(app: &Arc<App>, live: &Arc<Live>, begin: Begin) -> anyhow::Result<()> {
    let mut stop_rx = live.stop();
    let Some(runtime) = app.runtimes.by_name(live.runtime) else {
        app.record(
            live,
            &[(
                State::Failed,
                Some(format!("runtime {} is unavailable", live.runtime)),
            )],
            None,
        )
        .await?;
        return Ok(());
    };

    let (handle, exited, netns) = match begin {
        Begin::Running { handle, exited } => (handle, exited, None),
        Begin::Start | Begin::Wake => {
            let waking = matches!(begin, Begin::Wake);
            match start(app, live, runtime.as_ref(), &mut stop_rx, waking).await? {
                Some(started) => started,
                None => return Ok(()),
            }
        }
    };

    let outcome = run(
        app,
        live,
        runtime.as_ref(),
        &handle,
        exited,
        netns,
        &mut stop_rx,
    )
    .await;
    if let Err(e) = &outcome {
        // Nobody would watch, sweep or stop it any more: stop it now rather than leave it
        // running unsupervised.
        let _ = runtime.signal(&handle, Signal::Kill).await;
        let _ = app
            .record(
                live,
                &[(State::Failed, Some(format!("its supervisor failed: {e}")))],
                None,
            )
            .await;
    }
    // Asleep, its container goes too (its volume stays: `Runtime::forget` is for its end).
    if let Err(e) = runtime.cleanup(&handle).await {
        tracing::warn!(error = %e, "cleanup failed");
    }
    match outcome? {
        Ran::Ended => Ok(()),
        Ran::Slept(reason) => {
            fall_asleep(app, live, reason).await?;
            // The supervisor ends here: a sleeping backend has no task; a wake starts a
            // supervisor again.
            doze(app, live.clone());
            Ok(())
        }
    }
}

/// Leaves a sleeping backend with no task at all (what makes it cheap): a stop or wake
/// asked of it from now on rouses it ([`stop`], [`wake`]); one asked meanwhile, at once.
fn doze(app: &Arc<App>, live: Arc<Live>) {
    if live.go_dormant() {
        rouse(app, live);
    }
}

/// Asks a backend to stop: its supervisor carries it out, or, if it sleeps, a task started
/// for it here.
pub fn stop(app: &Arc<App>, live: &Arc<Live>, req: StopRequest) {
    if live.request_stop(req) {
        rouse(app, live.clone());
    }
}

/// Asks a sleeping backend to wake (a no-op for one that does not sleep).
pub fn wake(app: &Arc<App>, live: &Arc<Live>) {
    if live.request_wake() {
        rouse(app, live.clone());
    }
}

/// Carries out what was asked of a dormant backend: a stop ends it (there is no process to
/// signal) and lets go of what it kept; a wake records `Waking` and has it supervised.
fn rouse(app: &Arc<App>, live: Arc<Live>) {
    let app = app.clone();
    let span = tracing::info_span!("backend", id = %live.id);
    tokio::spawn(
        async move {
            match Box::pin(roused(&app, &live)).await {
                Ok(Roused::Woken) => begin_wake(&app, live),
                Ok(Roused::Ended) => {
                    if live.state().is_terminal() {
                        Box::pin(crate::kept::forget(&app, &live)).await;
                    }
                }
                Ok(Roused::Asleep) => doze(&app, live),
                Err(e) => {
                    // The store could not take it: asked again in a while.
                    tracing::error!(error = %e, "carrying out a stop or wake of a sleeping backend failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    doze(&app, live);
                }
            }
        }
        .instrument(span),
    );
}

/// What became of a roused backend.
enum Roused {
    /// Recorded `Waking`: to be started.
    Woken,
    /// A stop ended it (or it is no longer asleep).
    Ended,
    /// Nothing was asked after all: it sleeps on.
    Asleep,
}

async fn roused(app: &Arc<App>, live: &Arc<Live>) -> anyhow::Result<Roused> {
    if let Some(req) = live.stop_asked() {
        end_unstarted(app, live, req).await?;
        return Ok(Roused::Ended);
    }
    if !live.take_wake() {
        return Ok(Roused::Asleep);
    }
    live.take_sleep();
    app.record(live, &[(State::Waking, None)], None).await?;
    if live.state() != State::Waking {
        return Ok(Roused::Ended);
    }
    // Its tunnels of the next run are not told it goes away.
    live.monitor.back();
    app.metrics.wakes.inc();
    Ok(Roused::Woken)
}

/// A supervisor for a backend just woken (recorded `Waking`).
fn begin_wake(app: &Arc<App>, live: Arc<Live>) {
    spawn_supervisor(app, live, Begin::Wake);
}

/// Starts the backend (again, when `waking`) from its spec: where it runs, once started;
/// `None` once it has ended instead (a stop came first, the start failed).
async fn start(
    app: &Arc<App>,
    live: &Arc<Live>,
    runtime: &dyn Runtime,
    stop_rx: &mut crate::live::Stop<'_>,
    waking: bool,
) -> anyhow::Result<Option<(Handle, BoxFuture<'static, Exit>, Option<PathBuf>)>> {
    // A terminate that arrived before the start: nothing to stop.
    let early = stop_rx.borrow_and_update();
    if let Some(req) = early {
        end_unstarted(app, live, req).await?;
        return Ok(None);
    }
    // Process starts wait their turn, parked: a storm of spawns then queues here
    // instead of filling the runtime's run queue ahead of every other request.
    let _turn = if live.runtime == "process" {
        tokio::select! {
            biased;
            _ = wait_stop(stop_rx) => {
                let req = stop_rx.borrow();
                if let Some(req) = req {
                    end_unstarted(app, live, req).await?;
                }
                return Ok(None);
            }
            permit = PROCESS_STARTS.acquire() => permit.ok(),
        }
    } else {
        None
    };
    let mut launch = match prepare(app, live).await {
        Ok(l) => l,
        Err(e) => {
            app.record(live, &[(State::Failed, Some(e.to_string()))], None)
                .await?;
            return Ok(None);
        }
    };
    let (progress, mut said) = tokio::sync::mpsc::unbounded_channel();
    launch.progress = Some(progress);
    let mut start = Box::pin(runtime.start(&launch));
    // A start can take long (an image pull): what it does is recorded as it goes,
    // and a stop (terminate, startup timeout) abandons it.
    let result = loop {
        tokio::select! {
            biased;
            _ = wait_stop(stop_rx) => break None,
            Some(note) = said.recv() => app.note(live, &note).await?,
            result = start.as_mut() => break Some(result),
        }
    };
    let Some(result) = result else {
        drop(start);
        abandon_start(app, live, runtime).await;
        let req = stop_rx.borrow();
        if let Some(req) = req {
            end_unstarted(app, live, req).await?;
        }
        return Ok(None);
    };
    let started = match result {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                RuntimeError::Start(msg) => msg,
                other => format!("could not start: {other}"),
            };
            let reason = if waking {
                format!("{reason} (while waking)")
            } else {
                reason
            };
            app.record(live, &[(State::Failed, Some(reason))], None)
                .await?;
            return Ok(None);
        }
    };
    let address = started.address.to_string();
    app.registry.set_authority(live, &address);
    if waking {
        // Started again: where it runs now, and the runtime's note in its timeline (it
        // stays Waking until it listens), in one commit.
        let note = format!(
            "started again: {}",
            started.note.as_deref().unwrap_or(live.runtime)
        );
        app.record_started_again(live, &started.handle.0, &address, &note)
            .await?;
    } else {
        app.record_started(
            live,
            &started.handle.0,
            &address,
            &[
                (State::Constructed, started.note.clone()),
                (State::Scheduled, Some("node local".into())),
                (State::Running, None),
            ],
        )
        .await?;
    }
    Ok(Some((started.handle, started.exited, started.netns)))
}

/// Records a backend whose process has stopped for its sleep as `Sleeping`: its handle
/// and address forgotten (a restart then finds nothing to adopt and nothing to start), its
/// port let go.
async fn fall_asleep(app: &Arc<App>, live: &Arc<Live>, reason: StopReason) -> anyhow::Result<()> {
    // Wakes asked for while it was awake are not for this sleep.
    live.take_wake();
    app.registry.release_port(live);
    app.record_slept(live, reason.as_str()).await?;
    // The sweeper may have asked again while it went to sleep.
    live.take_sleep();
    Ok(())
}

/// Builds what the runtime needs: port, environment, expanded command.
async fn prepare(app: &App, live: &Live) -> Result<Launch, RuntimeError> {
    let id = BackendId::parse(&live.id).map_err(|e| RuntimeError::Start(e.to_string()))?;
    let held = |p| app.registry.holds_port(p);
    let port = match (live.spec.executable.port, live.runtime) {
        (Some(p), _) => p,
        // A backend woken from its sleep is reached where it was, when it can be.
        (None, "process") => match live.last_port().and_then(|p| app.ports.reuse(p, held)) {
            Some(p) => p,
            None => app.ports.allocate(held)?,
        },
        (None, _) => spawner_core::spec::DEFAULT_PORT,
    };
    let mut spec = live.spec.clone();
    let mut env = backend_env(
        &live.spec.executable.env,
        &live.id,
        port,
        crate::config::Urls::BASE_PATH,
        &app.urls.backend(&live.id),
    );
    env.insert(
        "SPAWNER_KEEPALIVE_URL".into(),
        keepalive_url(app, live).await?,
    );
    if let Some(dir) = crate::kept::data_dir(app, live, &mut spec)? {
        env.insert("SPAWNER_DATA_DIR".into(), dir);
    }
    let mut command: Option<Vec<String>> = live
        .spec
        .executable
        .command
        .as_ref()
        .map(|c| c.iter().map(|a| expand(a, &env)).collect());
    if live.runtime == "process" {
        if let Some(program) = command.as_mut().and_then(|c| c.first_mut()) {
            own_binary(program);
        }
    }
    Ok(Launch {
        id,
        spec,
        port,
        env,
        command,
        log_path: app.log_path(&live.id),
        instance: app.instance.clone(),
        progress: None,
    })
}

/// The URL a backend calls to keep itself from being swept: the keepalive route with its
/// own token, made now and kept in the store (a restart finds it for the backend it adopts).
async fn keepalive_url(app: &App, live: &Live) -> Result<String, RuntimeError> {
    let token = match live.keepalive_token() {
        Some(t) => t.to_string(),
        None => {
            let fresh =
                BackendId::generate().map_or_else(|_| String::new(), |t| t.as_str().to_string());
            let token = app
                .store
                .keepalive_token(&live.id, fresh)
                .await
                .map_err(|e| {
                    RuntimeError::Start(format!("could not record its keepalive token: {e}"))
                })?;
            if token.is_empty() {
                return Err(RuntimeError::Start(
                    "the system's random source failed; no keepalive token".into(),
                ));
            }
            live.set_keepalive_token(token.clone());
            token
        }
    };
    Ok(format!(
        "{}?token={token}",
        app.urls.api(&live.id, "keepalive")
    ))
}

/// Re-attaches to one backend that the store says was started: supervised again if it
/// runs, finished if it ended meanwhile.
async fn adopt(
    app: &Arc<App>,
    live: &Arc<Live>,
    runtime: &dyn Runtime,
    handle: &Handle,
    ended: Ending,
) -> anyhow::Result<()> {
    let id = BackendId::parse(&live.id)?;
    match runtime.adopt(&id, handle).await? {
        Some(exited) => {
            tracing::info!(backend = %live.id, state = %live.state(), "adopted");
            live.monitor.touch();
            if let Ending::Sleep(reason) = ended {
                // It was being put to sleep: its supervisor does it again.
                live.request_sleep(reason);
            }
            if live.state().is_starting() {
                // `Ready` may have been shown under the next sequence number and lost with
                // the crash (it is shown before it is committed, `App::ready`): this note
                // takes that number, so that a status stream resuming after it (its
                // `Last-Event-ID`) misses none of what comes next.
                app.note(live, "Spawner restarted; watching again for it to listen")
                    .await?;
            }
            let begin = Begin::Running {
                handle: handle.clone(),
                exited,
            };
            spawn_supervisor(app, live.clone(), begin);
        }
        None => match ended {
            // Its process stopped to sleep while Spawner was down: it sleeps.
            Ending::Sleep(reason) => {
                tracing::info!(backend = %live.id, "adopted asleep: its process stopped for its sleep while Spawner was down");
                let _ = runtime.cleanup(handle).await;
                fall_asleep(app, live, reason).await?;
                doze(app, live.clone());
            }
            Ending::Stop(stopping) => {
                finish(app, live, stopping, Exit::Unknown).await?;
                let _ = runtime.cleanup(handle).await;
                crate::kept::forget(app, live).await;
            }
        },
    }
    Ok(())
}

/// What a restart found asked of a backend before it: a stop (or none), or a sleep
/// pending ([`crate::store::SLEEP_PENDING`]).
#[derive(Clone, Copy)]
enum Ending {
    Stop(Option<StopReason>),
    Sleep(StopReason),
}

impl Ending {
    fn of(stop_reason: Option<&str>) -> Self {
        match stop_reason.and_then(|r| r.strip_prefix(crate::store::SLEEP_PENDING)) {
            Some(sleep) => Ending::Sleep(StopReason::parse(sleep).unwrap_or(StopReason::Idle)),
            None => Ending::Stop(stop_reason.and_then(StopReason::parse)),
        }
    }
}

/// Asks again, with backoff, to adopt a backend whose runtime did not answer at start-up
/// (an engine restarting), so that it is not left running unsupervised. A stop asked for
/// meanwhile waits in its [`Live`] and is carried out once adopted.
fn adopt_later(app: &Arc<App>, live: Arc<Live>, handle: Handle, ended: Ending) {
    let app = app.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            let Some(runtime) = app.runtimes.by_name(live.runtime) else {
                return;
            };
            match adopt(&app, &live, runtime.as_ref(), &handle, ended).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(backend = %live.id, error = %e, retry_in = ?wait, "could not adopt");
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    });
}

/// Ends a backend stopped before it ran: straight to the stop's terminal state.
async fn end_unstarted(app: &Arc<App>, live: &Live, req: StopRequest) -> anyhow::Result<()> {
    let reason = req.reason.as_str().to_string();
    app.record(live, &[(req.reason.final_state(), Some(reason))], None)
        .await?;
    Ok(())
}

/// Removes whatever an abandoned start had made (a created container) by the marks the
/// runtime puts on it, so that nothing is left behind.
async fn abandon_start(app: &App, live: &Live, runtime: &dyn Runtime) {
    match runtime.list_owned(&app.instance).await {
        Ok(owned) => {
            for o in owned.into_iter().filter(|o| o.id == live.id) {
                if let Err(e) = runtime.cleanup(&o.handle).await {
                    tracing::warn!(error = %e, what = %o.describe, "cleanup of an abandoned start failed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing what an abandoned start made failed"),
    }
}

/// A process backend whose program is `spawner` runs this server's own binary (the bundled
/// example app, for one), whether or not it is on the server's `PATH`.
fn own_binary(program: &mut String) {
    if program == "spawner" {
        if let Some(exe) = std::env::current_exe()
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok())
        {
            *program = exe;
        }
    }
}

/// Watches a running backend until it has exited, and records how it ended; or until it
/// has stopped to sleep.
async fn run(
    app: &Arc<App>,
    live: &Arc<Live>,
    runtime: &dyn Runtime,
    handle: &Handle,
    mut exited: BoxFuture<'static, Exit>,
    netns: Option<PathBuf>,
    stop_rx: &mut crate::live::Stop<'_>,
) -> anyhow::Result<Ran> {
    let address: Option<SocketAddr> = live.authority().and_then(|a| a.as_str().parse().ok());
    let probe_started = Instant::now();

    // Phase 1: until Ready, a stop, or the exit.
    if live.state().is_starting() {
        let ready = async {
            match address {
                Some(addr) => wait_listening(live.runtime, netns.as_deref(), addr).await,
                None => std::future::pending().await,
            }
        };
        // In this order: a backend asked to stop never becomes Ready, even when its port
        // opens at the same moment.
        tokio::select! {
            biased;
            exit = &mut exited => return ended(finish(app, live, None, exit).await),
            _ = wait_stop(stop_rx) => {}
            () = ready => {
                live.monitor.touch();
                let took = probe_started.elapsed();
                let woke_at = (live.state() == State::Waking).then(|| live.observed().since);
                // Shown now, committed behind it: a client sees Ready without waiting for
                // the writer thread.
                app.ready(live);
                match woke_at {
                    Some(since) => app.metrics.wake_to_ready(now_millis() - since),
                    None => app.metrics.spawn_to_ready(now_millis() - live.created_at, took),
                }
            }
        }
    }

    // Phase 2: until a stop or a sleep is asked for, or it exits by itself.
    let sleep = loop {
        let nudged = live.nudged();
        tokio::pin!(nudged);
        nudged.as_mut().enable();
        if stop_rx.borrow().is_some() {
            break None;
        }
        if let Some(reason) = live.take_sleep() {
            break Some(reason);
        }
        tokio::select! {
            exit = &mut exited => return ended(finish(app, live, None, exit).await),
            _ = wait_stop(stop_rx) => break None,
            () = &mut nudged => {}
        }
    };
    if let Some(reason) = sleep {
        return go_to_sleep(app, live, runtime, handle, exited, stop_rx, reason).await;
    }

    // Phase 3: stop it: SIGTERM, then SIGKILL after the stop grace (or at once when hard).
    let Some(req) = stop_rx.borrow_and_update() else {
        return Ok(Ran::Ended);
    };
    // A stop is carried out even when it cannot be recorded (a full disk): how it ended is
    // recorded once the store takes writes again (see `finish`).
    if let Err(e) = app
        .record(
            live,
            &[(State::Terminating, Some(req.reason.as_str().into()))],
            None,
        )
        .await
    {
        tracing::warn!(error = %e, "could not record Terminating; stopping it anyway");
    }
    if matches!(req.reason, StopReason::Idle | StopReason::IdleTimeout) {
        app.metrics.sweeps.inc();
    }
    // Its clients first: every WebSocket is sent a close frame (1001 and why) by the proxy,
    // and requests in flight are answered, before the backend hears of the stop.
    live.monitor.going_away(req.reason.going_away());
    if !req.hard {
        let_clients_go(live, app.config.stop_grace).await;
    }
    let exit = signal_until_exit(app, runtime, handle, &mut exited, stop_rx, req.hard).await?;
    ended(finish(app, live, Some(req.reason), exit).await)
}

/// SIGTERM (SIGKILL when `hard`), then SIGKILL after the stop grace or at a hard stop asked
/// meanwhile; resolves with how the process exited.
async fn signal_until_exit(
    app: &App,
    runtime: &dyn Runtime,
    handle: &Handle,
    exited: &mut BoxFuture<'static, Exit>,
    stop_rx: &mut crate::live::Stop<'_>,
    mut killed: bool,
) -> anyhow::Result<Exit> {
    runtime
        .signal(handle, if killed { Signal::Kill } else { Signal::Term })
        .await?;
    let deadline = tokio::time::Instant::now() + app.config.stop_grace;
    loop {
        tokio::select! {
            exit = &mut *exited => return Ok(exit),
            _ = tokio::time::sleep_until(deadline), if !killed => {
                tracing::info!("still running after the stop grace: killing");
                killed = true;
                runtime.signal(handle, Signal::Kill).await?;
            }
            () = stop_rx.changed() => {
                if stop_rx.borrow().is_some_and(|r| r.hard) && !killed {
                    killed = true;
                    runtime.signal(handle, Signal::Kill).await?;
                }
            }
        }
    }
}

/// A run that ended the backend.
fn ended(finished: anyhow::Result<()>) -> anyhow::Result<Ran> {
    finished.map(|()| Ran::Ended)
}

/// Stops a Ready backend to sleep, as a sweep would stop it: no new request is routed to it
/// (they wait for its wake), its WebSockets are closed (1001 `sleeping`), its requests in
/// flight answered, then SIGTERM, and SIGKILL after the stop grace. A stop asked for
/// meanwhile (terminate, lifetime limit) ends it for good instead.
async fn go_to_sleep(
    app: &Arc<App>,
    live: &Arc<Live>,
    runtime: &dyn Runtime,
    handle: &Handle,
    mut exited: BoxFuture<'static, Exit>,
    stop_rx: &mut crate::live::Stop<'_>,
    reason: StopReason,
) -> anyhow::Result<Ran> {
    tracing::info!(reason = reason.as_str(), "going to sleep");
    live.hide_authority();
    live.monitor.going_away(GOING_TO_SLEEP);
    let grace = app.config.stop_grace;
    let_clients_go(live, grace).await;
    // Durably before the signal: a crash from here until `Sleeping` is recorded leaves it
    // to sleep at the restart, not lost.
    if let Err(e) = app.store.sleep_pending(&live.id, reason.as_str()).await {
        tracing::warn!(error = %e, "could not record the sleep before it; going to sleep all the same");
    }
    let hard = stop_rx.borrow().is_some_and(|r| r.hard);
    let exit = signal_until_exit(app, runtime, handle, &mut exited, stop_rx, hard).await?;
    let stop = stop_rx.borrow();
    match stop {
        Some(req) => ended(finish(app, live, Some(req.reason), exit).await),
        None => Ok(Ran::Slept(reason)),
    }
}

/// How long a stop waits for every WebSocket's close frame to go out (each waits for the
/// end of the frame the backend is sending), within the stop grace.
const GOING_AWAY_WAIT: Duration = Duration::from_secs(2);

/// After the proxy was told the backend goes away: waits for every WebSocket's close frame
/// to go out (at most [`GOING_AWAY_WAIT`]), then for its requests in flight, within `grace`.
async fn let_clients_go(live: &Live, grace: Duration) {
    let told = tokio::time::timeout(GOING_AWAY_WAIT.min(grace), live.monitor.all_told());
    if told.await.is_err() {
        tracing::info!(
            "a WebSocket's close frame is held back by a frame in progress; stopping anyway"
        );
    }
    answered(live, grace).await;
}

/// Waits until the backend's requests in flight have been answered, at most `grace`. The
/// proxy routes no new ones to a backend that is stopping.
async fn answered(live: &Live, grace: Duration) {
    let deadline = Instant::now() + grace;
    while live.monitor.requests_in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records how a backend ended. A store that cannot take the write (a full disk) is asked
/// again until it does, so that the end is never lost while Spawner runs.
async fn finish(
    app: &Arc<App>,
    live: &Arc<Live>,
    stopping: Option<StopReason>,
    exit: Exit,
) -> anyhow::Result<()> {
    let (state, reason, code) = outcome(live.state(), stopping, exit);
    let mut wait = Duration::from_millis(200);
    loop {
        match app
            .record(live, &[(state, Some(reason.clone()))], code)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_full() => {
                tracing::warn!(error = %e, retry_in = ?wait, "could not record how it ended");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn wait_stop(rx: &mut crate::live::Stop<'_>) {
    rx.wait_for(|r| r.is_some()).await;
}

/// Resolves once the backend listens at `addr`, seen by the listen watch of the namespace
/// it listens in: Spawner's own for processes, the container's for a container just started
/// (backed by a connect probe, in case that namespace is not where `addr` leads). An
/// adopted container's namespace is not known: a connect probe with back-off.
///
/// A container seen listening in its namespace is also connected to once from Spawner's,
/// where the proxy is: the path between them (the bridge, the host's neighbour entry for an
/// address that an ended container had a moment ago) is then known to work before Ready
/// sends anyone there.
async fn wait_listening(runtime: &str, netns: Option<&Path>, addr: SocketAddr) {
    match netns {
        Some(ns) => {
            ListenWatch::of_namespace(ns)
                .listening_or_accepting(addr)
                .await;
            readiness::accepting(addr).await
        }
        None if runtime == "process" => ListenWatch::own().listening(addr).await,
        None => readiness::accepting(addr).await,
    }
}

/// Re-attaches to every backend the store says is live, fails those that are gone, and
/// stops whatever the runtimes report of this installation that the store does not know.
pub async fn adopt_all(app: &Arc<App>) -> anyhow::Result<()> {
    let rows = app.store.live()?;
    let mut keep: HashSet<String> = HashSet::new();
    let live_ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut to_start: Vec<(Arc<Live>, Begin)> = Vec::new();
    for row in rows {
        let runtime_name: &'static str = match row.runtime.as_str() {
            "process" => "process",
            "docker" => "docker",
            other => {
                tracing::error!(backend = %row.id, runtime = other, "unknown runtime in the store; leaving it");
                continue;
            }
        };
        let last = app.store.last_event(&row.id)?;
        let seq = last.as_ref().map_or(0, |e| e.seq);
        let live = Arc::new(Live::new(
            row.id.clone(),
            row.spec.clone(),
            row.created_at,
            runtime_name,
            row.state,
            seq,
        ));
        if let Some(e) = &last {
            live.set_since(e.time);
        }
        live.set_reason(row.reason.clone());
        crate::access::restore(app, &live)?;
        if let Some(k) = app.store.keepalive(&row.id)? {
            live.set_keepalive_token(k.token);
            if let Some(until) = k.busy_until {
                live.set_busy_until(until);
            }
        }
        if let Some(reason) = row.stop_reason.as_deref().and_then(StopReason::parse) {
            // Not dormant yet: whatever watches it next carries the stop out.
            let _ = live.request_stop(StopRequest {
                reason,
                hard: row.stop_hard,
            });
        }
        let Some(runtime) = app.runtimes.by_name(runtime_name) else {
            tracing::error!(backend = %row.id, runtime = runtime_name, "its runtime is unavailable; it stays as it is until a restart with the runtime");
            keep.insert(row.id.clone());
            continue;
        };
        app.registry.insert(live.clone());
        if row.state == State::Sleeping {
            // Asleep: nothing of it runs (anything found is stopped below as stray); it
            // waits for a wake (or carries out its recorded stop), its `since` kept.
            doze(app, live);
            continue;
        }
        let Some(handle) = row.handle.clone().map(Handle) else {
            // Recorded but never started (or the start was not recorded): started below,
            // once whatever of it may run unrecorded has been stopped as unknown. One that
            // was waking is woken again.
            let begin = if row.state == State::Waking {
                // Its startup timeout counts from this wake.
                live.set_since(now_millis());
                Begin::Wake
            } else {
                Begin::Start
            };
            to_start.push((live, begin));
            continue;
        };
        keep.insert(row.id.clone());
        if let Some(address) = &row.address {
            app.registry.set_authority(&live, address);
        }
        let ended = Ending::of(row.stop_reason.as_deref());
        if let Err(e) = adopt(app, &live, runtime.as_ref(), &handle, ended).await {
            tracing::error!(backend = %row.id, error = %e, "could not adopt; trying again");
            adopt_later(app, live, handle, ended);
        }
    }
    // Anything of ours that the store does not count as live is stopped: no orphans.
    for name in ["process", "docker"] {
        let Some(runtime) = app.runtimes.by_name(name) else {
            continue;
        };
        match runtime.list_owned(&app.instance).await {
            Ok(owned) => {
                for o in owned.into_iter().filter(|o| !keep.contains(&o.id)) {
                    // A container whose backend the store never heard of may be someone's
                    // evidence: reported, and removed only when configured to.
                    if name == "docker"
                        && !app.config.remove_unknown_containers
                        && app.store.get(&o.id).ok().flatten().is_none()
                    {
                        tracing::warn!(backend = %o.id, what = %o.describe, "a container of this installation that the store does not know; left in place (--remove-unknown-containers removes such containers)");
                        continue;
                    }
                    tracing::warn!(backend = %o.id, what = %o.describe, "stopping a {name} backend the store does not count as live");
                    let _ = runtime.signal(&o.handle, Signal::Kill).await;
                    let _ = runtime.cleanup(&o.handle).await;
                }
            }
            Err(e) => tracing::warn!(runtime = name, error = %e, "could not list owned backends"),
        }
        // What is kept across sleeps (volumes) of a backend that is not live, by the same
        // rules as its containers.
        match runtime.list_kept(&app.instance).await {
            Ok(kept) => {
                for k in kept.into_iter().filter(|k| !live_ids.contains(&k.id)) {
                    let known = app.store.get(&k.id).ok().flatten().is_some();
                    if !known && !app.config.remove_unknown_containers {
                        tracing::warn!(backend = %k.id, what = %k.describe, "a volume of this installation that the store does not know; left in place (--remove-unknown-containers removes such volumes)");
                        continue;
                    }
                    let Ok(id) = BackendId::parse(&k.id) else {
                        continue;
                    };
                    tracing::warn!(backend = %k.id, what = %k.describe, "removing what a backend that is not live kept");
                    if let Err(e) = runtime.forget(&app.instance, &id).await {
                        tracing::warn!(backend = %k.id, error = %e, "could not remove it");
                    }
                }
            }
            Err(e) => tracing::warn!(runtime = name, error = %e, "could not list kept volumes"),
        }
    }
    crate::kept::forget_stale_dirs(app, &live_ids);
    for (live, begin) in to_start {
        if matches!(begin, Begin::Wake) {
            tracing::info!(backend = %live.id, "waking a backend that was waking before the restart");
        } else {
            tracing::info!(backend = %live.id, "starting a backend submitted before the restart");
        }
        spawn_supervisor(app, live, begin);
    }
    Ok(())
}
