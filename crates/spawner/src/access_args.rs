//! The flags both API servers take for who may reach them from a browser
//! (`spawner_api::guard`), so that `serve` and `api` spell them alike.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BrowserArgs {
    /// Another name under which clients reach the API (its `Host`, e.g. a Service's
    /// `spawner-api.spawner.svc`); requests for any other name are refused (DNS rebinding).
    /// Repeatable, or comma-separated in the variable.
    #[arg(
        long = "allowed-host",
        env = "SPAWNER_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub allowed_hosts: Vec<String>,
    /// The origin of a site whose pages may call the API from the browser (CORS), e.g.
    /// https://app.example.com; none by default. Repeatable, or comma-separated.
    #[arg(
        long = "cors-origin",
        env = "SPAWNER_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origins: Vec<String>,
}
