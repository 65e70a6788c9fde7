//! `spawner-adversary`: runs the adversarial corpus against Spawner's proxy and, with
//! `--peers`, against nginx and HAProxy as reverse proxies too, and prints where they
//! differ. Run it through `scripts/adversary`, which installs the peers.

use anyhow::{bail, Context, Result};
use clap::Parser;
use spawner_adversary::{cases, proxies, run_case, verdict, Backend, Class};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "The adversarial HTTP/1 corpus against Spawner's proxy and its peers.")]
struct Args {
    /// Also run the corpus against nginx and HAProxy (both must be installed).
    #[arg(long)]
    peers: bool,
    /// Print every case, not only those where the proxies differ.
    #[arg(long)]
    all: bool,
    /// Where the peers keep their configuration and logs.
    #[arg(long, default_value = "target/adversary")]
    work_dir: std::path::PathBuf,
}

type Verdict = Result<Class, String>;

fn label(v: &Verdict) -> String {
    match v {
        Ok(Class::Forwarded) => "forwarded".into(),
        Ok(Class::Refused) => "refused".into(),
        Ok(Class::Partly) => "partly".into(),
        Err(_) => "FAIL".into(),
    }
}

async fn run_all(proxy: SocketAddr, backend: &Backend) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let outcome = run_case(proxy, &backend.log, case, i).await;
        out.push(verdict(case, &outcome));
    }
    out
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let backend = Backend::start()
        .await
        .context("starting the recording backend")?;
    let mut names = vec!["spawner".to_string()];
    let mut results = vec![run_all(proxies::spawner(backend.addr).await?, &backend).await];
    let mut children = Vec::new();
    if args.peers {
        let dir = std::fs::canonicalize(".")?.join(&args.work_dir);
        std::fs::create_dir_all(dir.join("tmp"))?;
        let nginx_port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, proxies::nginx_conf(&dir, nginx_port, backend.addr))?;
        let nginx = tokio::process::Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?;
        children.push(nginx);
        let haproxy_port = free_port()?;
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, proxies::haproxy_conf(haproxy_port, backend.addr))?;
        let haproxy = tokio::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        children.push(haproxy);
        for (name, port) in [("nginx", nginx_port), ("haproxy", haproxy_port)] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_listening(addr).await?;
            names.push(name.into());
            results.push(run_all(addr, &backend).await);
        }
    }

    let cases = cases();
    println!("{:<14} {:<60} {}", "category", "case", names.join(" | "));
    for (i, case) in cases.iter().enumerate() {
        let labels: Vec<String> = results.iter().map(|r| label(&r[i])).collect();
        if args.all || labels.iter().any(|l| *l != labels[0]) || labels[0] == "FAIL" {
            println!(
                "{:<14} {:<60} {}",
                case.category,
                case.name,
                labels.join(" | ")
            );
        }
    }
    println!();
    for (name, r) in names.iter().zip(&results) {
        let count = |l: &str| r.iter().filter(|v| label(v) == l).count();
        println!(
            "{name}: {} cases: {} forwarded, {} refused, {} partly, {} failed",
            r.len(),
            count("forwarded"),
            count("refused"),
            count("partly"),
            count("FAIL")
        );
        for (case, v) in cases.iter().zip(r) {
            if let Err(why) = v {
                println!("  FAIL [{}] {}: {why}", case.category, case.name);
            }
        }
    }
    drop(children);
    if results[0].iter().any(|v| v.is_err()) {
        bail!("Spawner's proxy failed cases of the corpus");
    }
    Ok(())
}
