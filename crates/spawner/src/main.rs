//! `spawner`: the server, its components and its command-line client in one binary.

mod access_args;
mod client_cmd;
mod example_app;
mod human;
mod k8s_cmd;
mod k8s_node_cmd;
mod pool_cmd;
mod serve;
mod spec_args;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spawner",
    version,
    about = "Session-lived backends: spawn a server per user or document, route to it, sweep it when idle."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded server: API, proxy, reconciler and sweeper in one process.
    Serve(serve::ServeArgs),
    /// Spawn a backend (or get the live one with the same --key; with --pool, claim one).
    Spawn(Box<client_cmd::SpawnArgs>),
    /// Manage warm pools: backends started ahead of demand, claimed with `spawn --pool`.
    #[command(subcommand)]
    Pool(pool_cmd::PoolCommand),
    /// List backends.
    Ls(client_cmd::LsArgs),
    /// Show a backend's state, or follow its events.
    Status(client_cmd::StatusArgs),
    /// Stop a backend.
    Terminate(client_cmd::TerminateArgs),
    /// Wake a Sleeping backend (one spawned with --idle-action sleep) ahead of its user.
    Wake(client_cmd::WakeArgs),
    /// Print a backend's output.
    Logs(client_cmd::LogsArgs),
    /// Print a connect URL for a user of a token-mode backend (sharing).
    Connect(client_cmd::ConnectArgs),
    /// Show a backend's access mode and who holds access.
    Access(client_cmd::AccessArgs),
    /// Revoke a user's access to a backend (their WebSockets are closed).
    Revoke(client_cmd::RevokeArgs),
    /// Print a one-time login link to the dashboard.
    Dashboard(client_cmd::DashboardArgs),
    /// Print the local server's control token (from its data directory).
    Token(client_cmd::TokenArgs),
    /// Keep a backend from being swept for SECONDS from now (busy with background work).
    Keepalive(client_cmd::KeepaliveArgs),
    /// Copy the local server's state (database, token, keys) into a directory, while it runs.
    Backup(client_cmd::BackupArgs),
    /// A small web app with a shared WebSocket counter, to try Spawner with (reads PORT).
    ExampleApp(example_app::ExampleArgs),
    #[command(flatten)]
    K8s(k8s_cmd::K8sCommand),
    #[command(flatten)]
    K8sNode(k8s_node_cmd::NodeCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Spawn(args) => client_cmd::spawn(*args).await,
            Command::Pool(cmd) => pool_cmd::run(cmd).await,
            Command::Ls(args) => client_cmd::ls(args).await,
            Command::Status(args) => client_cmd::status(args).await,
            Command::Terminate(args) => client_cmd::terminate(args).await,
            Command::Wake(args) => client_cmd::wake(args).await,
            Command::Logs(args) => client_cmd::logs(args).await,
            Command::Connect(args) => client_cmd::connect(args).await,
            Command::Access(args) => client_cmd::access(args).await,
            Command::Revoke(args) => client_cmd::revoke(args).await,
            Command::Dashboard(args) => client_cmd::dashboard(args).await,
            Command::Token(args) => client_cmd::token(args).await,
            Command::Backup(args) => client_cmd::backup(args).await,
            Command::Keepalive(args) => client_cmd::keepalive(args).await,
            Command::ExampleApp(args) => example_app::run(args).await,
            Command::K8s(cmd) => k8s_cmd::run(cmd).await,
            Command::K8sNode(cmd) => k8s_node_cmd::run(cmd).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`spawner ls | head`): not an error of ours.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        // Ctrl-C during `spawn --wait`: what became of the backend was said.
        Err(e) if e.downcast_ref::<client_cmd::Interrupted>().is_some() => {
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
