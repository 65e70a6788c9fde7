//! The requests kube-apiserver has served, from its own `apiserver_request_total`, by verb
//! and resource: what the k8s phase divides by the backends it ran to say what each
//! backend costs the API server.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Resources Spawner never asks for: the endpoint controllers of kube-controller-manager
/// write these for each Service, and they are not Spawner's requests.
const NOT_SPAWNERS: [&str; 2] = ["endpoints", "endpointslices"];

/// Requests served, by `VERB resource[/subresource]`.
#[derive(Debug, Clone, Default)]
pub struct Counts(BTreeMap<String, f64>);

impl Counts {
    /// Reads the API server's metrics now (as admin, `kubectl get --raw /metrics`: a
    /// non-resource request, which [`Counts`] leaves out).
    pub async fn read(admin: &Path) -> Result<Counts> {
        let out = tokio::process::Command::new("kubectl")
            .args(["get", "--raw", "/metrics"])
            .env("KUBECONFIG", admin)
            .output()
            .await
            .context("kubectl get --raw /metrics")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The `apiserver_request_total` series of a Prometheus text exposition, summed over
    /// codes and versions; non-resource requests and [`NOT_SPAWNERS`] left out.
    pub fn parse(text: &str) -> Counts {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split("\",")
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"'))
                    .unwrap_or_default()
            };
            let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
            if resource.is_empty() || NOT_SPAWNERS.contains(&resource) {
                continue;
            }
            let key = if sub.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{sub}")
            };
            *counts.entry(key).or_insert(0.0) += value;
        }
        Counts(counts)
    }

    /// What was served between `earlier` and this reading.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut out = BTreeMap::new();
        for (k, v) in &self.0 {
            let d = v - earlier.0.get(k).copied().unwrap_or(0.0);
            if d > 0.0 {
                out.insert(k.clone(), d);
            }
        }
        Counts(out)
    }

    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }

    /// The largest entries, largest first.
    pub fn top(&self, n: usize) -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = self.0.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn sums_by_verb_and_resource_and_leaves_out_what_is_not_spawners() {
        let text = "# HELP apiserver_request_total x\n\
apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 3\n\
apiserver_request_total{code=\"404\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 2\n\
apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"spawner.dev\",resource=\"sessionlivedbackends\",scope=\"resource\",subresource=\"status\",verb=\"PATCH\",version=\"v1\"} 7\n\
apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"endpoints\",scope=\"resource\",subresource=\"\",verb=\"PUT\",version=\"v1\"} 9\n\
apiserver_request_total{code=\"200\",component=\"\",dry_run=\"\",group=\"\",resource=\"\",scope=\"\",subresource=\"/metrics\",verb=\"GET\",version=\"\"} 4\n";
        let c = Counts::parse(text);
        assert_eq!(c.total(), 12.0);
        assert_eq!(
            c.top(1),
            vec![("PATCH sessionlivedbackends/status".to_string(), 7.0)]
        );
        let later = Counts::parse(&text.replace("} 3", "} 10"));
        assert_eq!(later.since(&c).total(), 7.0);
    }
}
