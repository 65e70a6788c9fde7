//! Warm pools of the embedded server: the pools and their members in memory (rebuilt from
//! the store at start-up), the pools' reconciler that keeps each at `min_ready` within
//! `max`, the claim hook, and the pools' metrics. Claims themselves are in `api::pools`.

use crate::app::App;
use crate::live::{Live, StopRequest};
use spawner_api::page::{Page, PageRequest};
use spawner_core::lifecycle::{StopReason, Timing};
use spawner_core::pool::{
    self, ClaimNotice, Claimed, PoolCounts, PoolList, PoolMetrics, PoolSpec, PoolStatus,
};
use spawner_core::time::Millis;
use spawner_core::{BackendId, BackendSpec, State};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One pool in memory: its spec and its counters.
pub struct Pool {
    spec: RwLock<PoolSpec>,
    /// Claims waiting for a Ready backend that asked for one more to be started.
    waiting: AtomicU32,
    claims: AtomicU64,
    cold_claims: AtomicU64,
    refused: AtomicU64,
    /// Backends that ended unclaimed in a row, and when the pool may start again: a
    /// template that cannot start is retried with back-off instead of in a loop.
    failures: AtomicU32,
    resume_at: Mutex<Option<Instant>>,
    /// Claims refused by the claim hook since the last one it took, and what the last
    /// refusal said: refusals hold the pool's starts back as failures do (a hook that
    /// refuses everything must not cycle backends), and a claim that times out quotes it.
    refusals: AtomicU32,
    last_refusal: Mutex<Option<String>>,
}

impl Pool {
    fn new(spec: PoolSpec) -> Self {
        Pool {
            spec: RwLock::new(spec),
            waiting: AtomicU32::new(0),
            claims: AtomicU64::new(0),
            cold_claims: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            resume_at: Mutex::new(None),
            refusals: AtomicU32::new(0),
            last_refusal: Mutex::new(None),
        }
    }

    pub fn spec(&self) -> PoolSpec {
        match self.spec.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A claim answered; `cold` when it found no Ready backend at first.
    pub fn claimed(&self, cold: bool) {
        self.claims.fetch_add(1, Ordering::Relaxed);
        if cold {
            self.cold_claims.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The claim hook refused a claim, saying `why`: counted, and the pool's next start
    /// waits as after a failure (0.1 s, doubling, at most 30 s).
    pub fn refused(&self, why: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let n = self.refusals.fetch_add(1, Ordering::Relaxed).min(8);
        self.hold_starts(n);
        if let Ok(mut last) = self.last_refusal.lock() {
            *last = Some(why.to_string());
        }
    }

    /// A claim the hook took: refusals start over.
    pub fn hook_took(&self) {
        self.refusals.store(0, Ordering::Relaxed);
    }

    /// What the claim hook said when it last refused, if it has refused since it last took
    /// a claim.
    pub fn refusing(&self) -> Option<String> {
        if self.refusals.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.last_refusal.lock().ok().and_then(|l| l.clone())
    }

    /// No start before 0.1 s × 2^`n` (at most 30 s) from now.
    fn hold_starts(&self, n: u32) {
        let backoff = Duration::from_millis(100 << n).min(Duration::from_secs(30));
        if let Ok(mut r) = self.resume_at.lock() {
            let until = Instant::now() + backoff;
            if r.is_none_or(|at| at < until) {
                *r = Some(until);
            }
        }
    }

    /// Counts a claim waiting for one more backend until the guard is dropped.
    pub fn wait(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }
}

/// A claim waiting for a backend to be started for it.
pub struct Waiting(Arc<Pool>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live backend's pool, and its claim once claimed.
#[derive(Debug, Clone)]
struct Membership {
    pool: String,
    claimed: Option<Claimed>,
    /// Its spec once claimed (key, labels, timings), where its [`Live`] has the template's.
    spec: Option<Arc<BackendSpec>>,
}

#[derive(Default)]
pub struct Pools {
    pools: RwLock<HashMap<String, Arc<Pool>>>,
    members: RwLock<HashMap<String, Membership>>,
    wake: Notify,
    /// Claims being answered (not those waiting for a backend), and when the last began:
    /// replacements start once a burst of claims is over, so that it does not share the
    /// cores with the starts it causes.
    claiming: AtomicU32,
    last_claim: Mutex<Option<Instant>>,
    /// Claims waiting for a backend: while there are any, replacements start at once.
    starved: AtomicU32,
}

/// A claim waiting for a backend, until dropped.
pub struct Starved<'a>(&'a Pools);

impl Drop for Starved<'_> {
    fn drop(&mut self) {
        self.0.starved.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A claim being answered, until dropped.
pub struct Claiming<'a>(&'a Pools);

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.claiming.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The longest replacements wait for a burst of claims to end.
const CLAIMS_FIRST: Duration = Duration::from_millis(200);
/// No claim for this long ends a burst.
const CLAIMS_QUIET: Duration = Duration::from_millis(10);

impl Pools {
    pub fn get(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.read().ok()?.get(name).cloned()
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<Arc<Pool>> = self
            .pools
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        pools.sort_by_key(|p| p.spec().name);
        pools
    }

    /// Adds a pool (created, or read back at start-up) and wakes the reconciler.
    pub fn insert(&self, spec: PoolSpec) {
        if let Ok(mut m) = self.pools.write() {
            m.insert(spec.name.clone(), Arc::new(Pool::new(spec)));
        }
        self.wake();
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.pools.write() {
            m.remove(name);
        }
    }

    pub fn resized(&self, spec: PoolSpec) {
        if let Some(pool) = self.get(&spec.name) {
            if let Ok(mut s) = pool.spec.write() {
                *s = spec;
            }
        }
        self.wake();
    }

    /// Counts a claim as being answered until the guard is dropped.
    pub fn claiming(&self) -> Claiming<'_> {
        self.claiming.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut last) = self.last_claim.lock() {
            *last = Some(Instant::now());
        }
        Claiming(self)
    }

    /// Counts a claim as waiting for a backend until the guard is dropped.
    pub fn starved(&self) -> Starved<'_> {
        self.starved.fetch_add(1, Ordering::AcqRel);
        self.wake();
        Starved(self)
    }

    /// Waits (at most [`CLAIMS_FIRST`]) until no claim is being answered and none began
    /// for [`CLAIMS_QUIET`]; not at all while a claim waits for a backend.
    async fn claims_first(&self) {
        let until = Instant::now() + CLAIMS_FIRST;
        while Instant::now() < until && self.starved.load(Ordering::Acquire) == 0 {
            let last = self.last_claim.lock().ok().and_then(|l| *l);
            let quiet = last.is_none_or(|at| at.elapsed() >= CLAIMS_QUIET);
            if quiet && self.claiming.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Wakes the pools' reconciler (a claim, a resize, a new pool).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn join(&self, id: &str, pool: &str, claimed: Option<Claimed>) {
        if let Ok(mut m) = self.members.write() {
            m.insert(
                id.to_string(),
                Membership {
                    pool: pool.to_string(),
                    claimed,
                    spec: None,
                },
            );
        }
    }

    /// Marks a member claimed with its claimed spec: from now on it is judged by its
    /// claim's clocks, and listed with its claim's key and labels.
    pub fn mark_claimed(&self, id: &str, claimed: Claimed, spec: BackendSpec) {
        if let Ok(mut m) = self.members.write() {
            if let Some(member) = m.get_mut(id) {
                member.claimed = Some(claimed);
                member.spec = Some(Arc::new(spec));
            }
        }
    }

    /// The pool of a live member, and when it was claimed (if it was).
    pub fn membership(&self, id: &str) -> Option<(String, Option<Millis>)> {
        let m = self.members.read().ok()?;
        let member = m.get(id)?;
        Some((member.pool.clone(), member.claimed.map(|c| c.at)))
    }

    /// The spec of a backend claimed since it started (its [`Live`] holds the template's).
    pub fn claimed_spec(&self, id: &str) -> Option<Arc<BackendSpec>> {
        self.members.read().ok()?.get(id)?.spec.clone()
    }

    /// The timing and the start of the clocks the sweeper judges `live` by; `None` for an
    /// unclaimed pooled backend that is Ready (never swept before its claim).
    pub fn sweep_clock(&self, live: &Live) -> Option<(Timing, Millis)> {
        let member = self
            .members
            .read()
            .ok()
            .and_then(|m| m.get(&live.id).cloned());
        pool::sweep_clock(
            member.is_some(),
            member.and_then(|m| m.claimed),
            live.state(),
            live.timing,
            live.created_at,
        )
    }

    /// Whether an unclaimed member of `pool` is shown `Ready` (so claimable once its
    /// `Ready` is committed, which follows within milliseconds) and not on its way out.
    pub fn ready_uncommitted(&self, app: &App, pool: &str) -> bool {
        self.members_of(app, pool).iter().any(|(live, claimed)| {
            !claimed && live.state() == State::Ready && live.stop_asked().is_none()
        })
    }

    /// The live members of `pool`, each with whether it is claimed; forgets the ended ones.
    fn members_of(&self, app: &App, pool: &str) -> Vec<(Arc<Live>, bool)> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        if let Ok(m) = self.members.read() {
            for (id, member) in m.iter() {
                match app.registry.get(id) {
                    Some(live) if member.pool == pool => out.push((live, member.claimed.is_some())),
                    Some(_) => {}
                    None => gone.push((id.clone(), member.claimed.is_some(), member.pool.clone())),
                }
            }
        }
        if !gone.is_empty() {
            if let Ok(mut m) = self.members.write() {
                for (id, _, _) in &gone {
                    m.remove(id);
                }
            }
            for (_, claimed, name) in gone {
                if let (false, Some(p)) = (claimed, self.get(&name)) {
                    let n = p.failures.fetch_add(1, Ordering::Relaxed).min(8);
                    p.hold_starts(n);
                }
            }
        }
        out
    }

    /// What `pool` holds now. Backends being stopped count nowhere.
    pub fn counts(&self, app: &App, pool: &str) -> PoolCounts {
        count(&self.members_of(app, pool))
    }

    /// Every pool with what it holds, by name.
    pub fn statuses(&self, app: &App) -> Vec<PoolStatus> {
        self.all().iter().map(|p| self.status(app, p)).collect()
    }

    /// A page of the pools with what they hold, by name: those after the name `after`.
    pub fn page(&self, app: &App, request: &PageRequest) -> PoolList {
        let mut page = Page::new(request);
        let mut last = None;
        for pool in self.all() {
            let name = pool.spec().name;
            if request.after.as_deref().is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            if page.is_full() {
                return PoolList {
                    pools: page.items,
                    next: last,
                };
            }
            let status = self.status(app, &pool);
            let bytes = spawner_core::limits::spec_bytes(&status.template.spec);
            page.push(status, bytes);
            last = Some(name);
        }
        PoolList {
            pools: page.items,
            next: None,
        }
    }

    pub fn status(&self, app: &App, pool: &Pool) -> PoolStatus {
        let spec = pool.spec();
        let counts = self.counts(app, &spec.name);
        PoolStatus {
            name: spec.name,
            template: spec.template,
            min_ready: spec.min_ready,
            max: spec.max,
            ready: counts.ready,
            starting: counts.starting,
            claimed: counts.claimed,
            claims: pool.claims.load(Ordering::Relaxed),
            cold_claims: pool.cold_claims.load(Ordering::Relaxed),
        }
    }

    /// The pools' series for `/metrics`.
    pub fn render_metrics(&self, app: &App) -> String {
        let rows: Vec<PoolMetrics> = self
            .statuses(app)
            .into_iter()
            .filter_map(|s| {
                let pool = self.get(&s.name)?;
                Some(PoolMetrics {
                    counts: PoolCounts {
                        ready: s.ready,
                        starting: s.starting,
                        claimed: s.claimed,
                    },
                    claims: s.claims,
                    cold_claims: s.cold_claims,
                    refused: pool.refused.load(Ordering::Relaxed),
                    name: s.name,
                })
            })
            .collect();
        pool::render_metrics(&rows, "")
    }
}

fn count(members: &[(Arc<Live>, bool)]) -> PoolCounts {
    let mut c = PoolCounts::default();
    for (live, claimed) in members {
        let state = live.state();
        if live.stop_asked().is_some() || state >= State::Terminating {
            // On its way out.
        } else if *claimed {
            c.claimed += 1;
        } else if state == State::Ready {
            c.ready += 1;
        } else {
            c.starting += 1;
        }
    }
    c
}

/// Reads the pools and their members back from the store after the backends were adopted:
/// unclaimed members are the pool's again, claimed ones keep their claim's clocks.
pub fn restore(app: &App) -> anyhow::Result<()> {
    for spec in app.store.pools()? {
        app.pools.insert(spec);
    }
    for m in app.store.members()? {
        let claimed = m.claimed_at.map(|at| Claimed {
            at,
            timing: Timing::of(&m.spec),
        });
        app.pools.join(&m.backend_id, &m.pool, claimed);
    }
    Ok(())
}

/// The pools' reconciler: after every change of a backend, a claim or a resize (and at
/// least once a second), brings every pool to its plan.
pub async fn run(app: Arc<App>) {
    let mut changes = app.registry.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        app.pools.claims_first().await;
        for pool in app.pools.all() {
            for live in reconcile(&app, &pool) {
                stop(&app, &live, StopReason::Terminate, "pool resized").await;
            }
        }
        tokio::select! {
            _ = app.pools.wake.notified() => {}
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Starts backends of one pool as [`pool::plan`] says; the ones to stop are returned, for
/// the caller to stop once recorded.
fn reconcile(app: &Arc<App>, pool: &Arc<Pool>) -> Vec<Arc<Live>> {
    let spec = pool.spec();
    let span = tracing::info_span!("pool", name = %spec.name);
    let _enter = span.enter();
    let members = app.pools.members_of(app, &spec.name);
    let counts = count(&members);
    if counts.ready > 0 {
        pool.failures.store(0, Ordering::Relaxed);
    }
    let plan = pool::plan(spec.size(), counts, pool.waiting.load(Ordering::Relaxed));
    if plan.start > 0 {
        let resume_at = pool.resume_at.lock().ok().and_then(|r| *r);
        if resume_at.is_some_and(|at| Instant::now() < at) {
            return Vec::new();
        }
        for _ in 0..plan.start {
            if let Err(e) = start_member(app, &spec) {
                tracing::warn!(error = %e, "could not start a backend of the pool");
                break;
            }
        }
    }
    if plan.stop > 0 {
        // Starting ones first (nobody waits on them yet), then the newest Ready.
        let mut unclaimed: Vec<&Arc<Live>> = members
            .iter()
            .filter(|(l, claimed)| {
                !claimed && l.stop_asked().is_none() && l.state() < State::Terminating
            })
            .map(|(l, _)| l)
            .collect();
        unclaimed.sort_by_key(|l| (l.state() == State::Ready, std::cmp::Reverse(l.created_at)));
        return unclaimed
            .into_iter()
            .take(plan.stop as usize)
            .inspect(
                |live| tracing::info!(backend = %live.id, "stopping a backend over the pool's max"),
            )
            .cloned()
            .collect();
    }
    Vec::new()
}

/// Records and launches one new unclaimed backend of the pool.
fn start_member(app: &Arc<App>, spec: &PoolSpec) -> anyhow::Result<()> {
    let template = &spec.template.spec;
    let runtime = app
        .runtimes
        .for_spec(template)
        .map_err(anyhow::Error::msg)?;
    let id = BackendId::generate()?;
    let row = app
        .store
        .insert_member(id.as_str(), &spec.name, template, runtime.name())?;
    let live = Arc::new(Live::new(
        row.id,
        row.spec,
        row.created_at,
        runtime.name(),
        row.state,
        1,
    ));
    tracing::info!(backend = %live.id, "starting a backend for the pool");
    // In the registry before it joins the pool: a member that the registry does not hold is
    // taken for one that has ended and forgotten (`members_of`, on any thread), and a
    // forgotten member is never counted or marked claimed again.
    app.registry.insert(live.clone());
    app.pools.join(&live.id, &spec.name, None);
    crate::reconciler::launch(app, live);
    Ok(())
}

/// Stops a pooled backend (a surplus after a resize, a drain, a refused claim): recorded
/// first, then carried out.
pub async fn stop(app: &Arc<App>, live: &Arc<Live>, reason: StopReason, why: &str) {
    if let Err(e) = app.store.set_stop(&live.id, reason.as_str(), false).await {
        tracing::warn!(backend = %live.id, error = %e, "could not record a stop; carrying it out");
    }
    if let Err(e) = app.note(live, why).await {
        tracing::warn!(backend = %live.id, error = %e, "could not record why it stops");
    }
    crate::reconciler::stop(
        app,
        live,
        StopRequest {
            reason,
            hard: false,
        },
    );
}

/// POSTs the claim to the backend at `path`; `Err` says why it counts as refused.
pub async fn claim_hook(live: &Live, path: &str, notice: &ClaimNotice) -> Result<(), String> {
    let Some(authority) = live.authority() else {
        return Err("it has no address".into());
    };
    spawner_proxy::claim_hook::post(authority.as_str(), path, notice).await
}
