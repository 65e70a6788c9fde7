//! The optional volume of a backend that sleeps (`--sleep-volume-size`): a
//! PersistentVolumeClaim per backend, owned by its SessionLivedBackend (so the garbage
//! collector deletes it with the object), mounted into the application container. A sleep
//! deletes the Pod; the claim stays, so the files the application wrote are there when it
//! wakes. Without the setting, a sleeper's files go with its Pod.

use crate::model::crd::SessionLivedBackend;
use k8s_openapi::api::core::v1::{
    EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    Pod, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::ObjectMeta;
use kube::Resource;
use spawner_core::IdleAction;
use std::collections::BTreeMap;

/// The controller's setting: each sleeping backend's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepVolume {
    /// The storage each claim requests (a Kubernetes quantity: `1Gi`).
    pub size: String,
    /// The StorageClass; the cluster's default without it.
    pub class: Option<String>,
}

impl SleepVolume {
    /// The setting, if `size` is a Kubernetes quantity of bytes (`512Mi`, `1Gi`, `10G`).
    pub fn new(size: String, class: Option<String>) -> Result<SleepVolume, String> {
        let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &size[digits.len()..];
        let units = ["", "k", "M", "G", "T", "P", "Ki", "Mi", "Gi", "Ti", "Pi"];
        let number = !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
            && digits.parse::<f64>().is_ok_and(|n| n > 0.0);
        if !number || !units.contains(&unit) {
            return Err(format!(
                "{size:?} is not a storage size: give a Kubernetes quantity such as 1Gi or 512Mi"
            ));
        }
        Ok(SleepVolume { size, class })
    }
}

/// The Pod's volume name for the claim.
pub const VOLUME_NAME: &str = "spawner-data";
/// Where the volume is mounted when the application container names no working directory.
pub const DEFAULT_MOUNT: &str = "/data";
/// The application's variable holding the volume's path.
pub const DATA_DIR_ENV: &str = "SPAWNER_DATA_DIR";

/// Whether `obj` gets a claim under `cfg`: it sleeps when idle, and the setting is on.
pub fn wanted<'a>(
    obj: &SessionLivedBackend,
    cfg: Option<&'a SleepVolume>,
) -> Option<&'a SleepVolume> {
    cfg.filter(|_| obj.idle_action() == IdleAction::Sleep)
}

/// The claim of `obj` (named as the object), owned by it.
pub fn build_claim(obj: &SessionLivedBackend, cfg: &SleepVolume) -> Option<PersistentVolumeClaim> {
    let name = obj.metadata.name.clone()?;
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: obj.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (crate::model::crd::LABEL_BACKEND.to_string(), name),
                (
                    crate::model::crd::LABEL_MANAGED_BY.to_string(),
                    crate::model::crd::MANAGED_BY.to_string(),
                ),
            ])),
            owner_references: obj.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: cfg.class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(cfg.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// Mounts the claim of backend `name` into the Pod's application container (the first) at
/// its working directory, or [`DEFAULT_MOUNT`], and tells the application where
/// ([`DATA_DIR_ENV`]).
pub fn mount(pod: &mut Pod, name: &str) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME_NAME.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: name.to_string(),
            read_only: None,
        }),
        ..Volume::default()
    });
    let Some(app) = spec.containers.first_mut() else {
        return;
    };
    let path = app
        .working_dir
        .clone()
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| DEFAULT_MOUNT.to_string());
    app.volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: VOLUME_NAME.to_string(),
            mount_path: path.clone(),
            ..VolumeMount::default()
        });
    let env = app.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != DATA_DIR_ENV);
    env.push(EnvVar {
        name: DATA_DIR_ENV.to_string(),
        value: Some(path),
        value_from: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::pod::build_pod;
    use crate::controller::pod::tests::{config, object};

    fn sleeper() -> SessionLivedBackend {
        let mut obj = object("b1");
        obj.spec.idle_action = Some("sleep".into());
        obj
    }

    #[test]
    fn sizes_are_quantities() {
        for ok in ["1Gi", "512Mi", "10G", "1.5Gi", "1000"] {
            assert!(SleepVolume::new(ok.into(), None).is_ok(), "{ok}");
        }
        for bad in ["", "Gi", "1GB", "-1Gi", "0", "one"] {
            assert!(SleepVolume::new(bad.into(), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_sleepers_get_a_claim_and_only_with_the_setting() {
        let cfg = SleepVolume {
            size: "1Gi".into(),
            class: Some("fast".into()),
        };
        assert!(wanted(&object("b1"), Some(&cfg)).is_none());
        assert!(wanted(&sleeper(), None).is_none());
        let claim = build_claim(&sleeper(), wanted(&sleeper(), Some(&cfg)).expect("wanted"))
            .expect("a claim");
        assert_eq!(claim.metadata.name.as_deref(), Some("b1"));
        let owner = &claim.metadata.owner_references.expect("owned")[0];
        assert_eq!(owner.uid, "uid-b1");
        assert_eq!(owner.controller, Some(true));
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.and_then(|r| r.requests).expect("requests")["storage"],
            Quantity("1Gi".into())
        );
    }

    #[test]
    fn the_claim_is_mounted_at_the_working_dir_or_data() {
        let mut cfg = config();
        cfg.sleep_volume = Some(SleepVolume {
            size: "1Gi".into(),
            class: None,
        });
        let mut obj = sleeper();
        let pod = build_pod(&obj, &cfg).expect("pod");
        let app = &pod.spec.as_ref().expect("spec").containers[0];
        let mounts = app.volume_mounts.as_ref().expect("mounts");
        assert_eq!(mounts[0].mount_path, DEFAULT_MOUNT);
        assert!(app
            .env
            .iter()
            .flatten()
            .any(|e| e.name == DATA_DIR_ENV && e.value.as_deref() == Some(DEFAULT_MOUNT)));
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .expect("volumes");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("b1")
        );
        obj.spec.template.containers[0].working_dir = Some("/srv".into());
        let pod = build_pod(&obj, &cfg).expect("pod");
        let app = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            app.volume_mounts.as_ref().expect("mounts")[0].mount_path,
            "/srv"
        );
        // A backend that is swept when idle keeps no files: no volume.
        let pod = build_pod(&object("b2"), &cfg).expect("pod");
        assert!(pod.spec.and_then(|s| s.volumes).is_none());
    }
}
