// Types of spawner.js. Bodies and records are the API's JSON (docs/api.md), snake_case.

export type State =
  | "Submitted" | "Constructed" | "Scheduled" | "Running" | "Ready"
  | "Sleeping" | "Waking" | "Terminating" | "Swept" | "Failed" | "Terminated";

export interface Executable {
  command?: string[];
  image?: string;
  env?: Record<string, string>;
  port?: number;
  working_dir?: string;
  pull_policy?: "Always" | "IfNotPresent" | "Never";
  image_pull_secret?: string;
}

export interface BackendSpec {
  key?: string;
  executable: Executable;
  grace_period_seconds?: number;
  lifetime_limit_seconds?: number;
  startup_timeout_seconds?: number;
  strip_prefix?: boolean;
  idle_timeout_seconds?: number;
  lifetime_warning_seconds?: number;
  idle_action?: "sweep" | "sleep";
  max_sleep_seconds?: number;
  labels?: Record<string, string>;
  resources?: { memory_mb?: number; cpu_millis?: number };
  [field: string]: unknown;
}

export interface SpawnResponse {
  id: string;
  key?: string;
  state: State;
  url: string;
  ready_url: string;
  status_url: string;
  status_stream_url: string;
  /** false when the live backend with the same key was returned */
  created: boolean;
  [field: string]: unknown;
}

export interface Event {
  state: State;
  time: string;
  reason?: string;
  exit_code?: number;
}

export interface BackendRecord {
  id: string;
  key?: string;
  state: State;
  reason?: string;
  url: string;
  spec: BackendSpec;
  created_at: string;
  events?: Event[];
  exit_code?: number | null;
  live_connections: number;
  last_activity?: string | null;
  last_client_activity?: string | null;
  busy_until?: string;
  node?: string;
  address?: string;
  runtime?: string;
  /** The warm pool that started it, if one did. */
  pool?: string;
  /** When a claim took it from its pool. */
  claimed_at?: string;
  [field: string]: unknown;
}

export interface ListFilter {
  state?: State;
  key?: string;
  /** `name=value`, or several (all must match) */
  label?: string | string[];
  labels?: Record<string, string>;
}

export interface ListPage {
  backends: BackendRecord[];
  next?: string;
}

export type ListChange =
  | { type: "snapshot"; backends: BackendRecord[]; next?: string }
  | { type: "backend"; backend: BackendRecord };

export type StatusItem =
  | ({ type: "event"; id: number } & Event)
  | { type: "expiring"; at: string; reason: string };

export interface ClaimOptions {
  key?: string;
  labels?: Record<string, string>;
  grace_period_seconds?: number;
  lifetime_limit_seconds?: number;
  idle_action?: "sweep" | "sleep";
  max_sleep_seconds?: number;
  if_none_ready?: "start" | "wait";
  wait_seconds?: number;
}

export interface PoolSpec {
  name: string;
  template: Omit<BackendSpec, "key"> & { claim_path?: string };
  min_ready: number;
  max: number;
}

export interface PoolStatus extends PoolSpec {
  ready: number;
  starting: number;
  claimed: number;
  claims: number;
  cold_claims: number;
}

export declare const ROUTES: Readonly<Record<string, readonly [string, string]>>;
export declare const METHODS: Readonly<Record<string, string>>;

/** A connect URL's user (docs/api.md, "Access"). */
export interface ConnectOptions {
  user: string;
  user_data?: unknown;
  ttl_seconds?: number;
  reusable?: boolean;
}

/** Who holds access to a token-mode backend. */
export interface AccessList {
  mode: "token" | "open";
  users: { user: string; user_data?: unknown; granted_at: string }[];
}

export declare class SpawnerError extends Error {
  /** The API's error code (`not_found`, `pool_exhausted`…), or `unreachable`, `not_spawner`, `timeout`, `stream_broken` */
  code: string;
  /** The HTTP status; 0 when the failure is not an answer of the API */
  status: number;
  constructor(code: string, status: number, message: string);
}

export declare class Spawner {
  constructor(options: { url: string; token?: string; fetch?: typeof fetch; retries?: number });
  readonly url: string;
  spawn(spec: BackendSpec): Promise<SpawnResponse>;
  claim(pool: string, options?: ClaimOptions): Promise<SpawnResponse>;
  get(id: string): Promise<BackendRecord>;
  list(filter?: ListFilter): Promise<BackendRecord[]>;
  listPage(filter?: ListFilter, page?: { limit?: number; after?: string }): Promise<ListPage>;
  watchList(filter?: ListFilter, options?: { signal?: AbortSignal }): AsyncGenerator<ListChange>;
  status(id: string, options?: { lastEventId?: number; signal?: AbortSignal }): AsyncGenerator<StatusItem>;
  waitReady(id: string, options?: { timeout?: number }): Promise<{ type: "event"; id: number } & Event>;
  lastEvent(id: string): Promise<Event>;
  isReady(id: string): Promise<boolean>;
  keepalive(id: string, seconds: number): Promise<{ id: string; busy_until: string }>;
  connect(id: string, options: ConnectOptions): Promise<{ connect_url: string; expires_at: string }>;
  access(id: string): Promise<AccessList>;
  revoke(id: string, user: string): Promise<void>;
  terminate(id: string, options?: { hard?: boolean }): Promise<{ id: string; state: State; hard: boolean }>;
  wake(id: string): Promise<{ id: string; state: State }>;
  logs(id: string, options?: { follow?: false }): Promise<string>;
  logs(id: string, options: { follow: true; signal?: AbortSignal }): AsyncGenerator<string>;
  createPool(spec: PoolSpec): Promise<PoolStatus>;
  getPool(name: string): Promise<PoolStatus>;
  listPools(): Promise<PoolStatus[]>;
  listPoolsPage(page?: { limit?: number; after?: string }): Promise<{ pools: PoolStatus[]; next?: string }>;
  resizePool(name: string, size: { min_ready: number; max: number }): Promise<PoolStatus>;
  deletePool(name: string): Promise<{ name: string; stopping: number }>;
  login(code: string): Promise<{ token: string }>;
  loginLink(): Promise<{ url: string; expires_in_seconds: number }>;
  health(): Promise<true>;
  metrics(): Promise<string>;
  openapi(): Promise<Record<string, unknown>>;
  request(
    method: string,
    path: string,
    options?: { body?: unknown; query?: Record<string, string> | [string, string][]; headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<Response>;
}
