//! A one-machine kubelet: it runs the pods of Deployments the way a node would, as processes of
//! the binary the image holds, so a test can start the runtime exactly as a rendered pod spec
//! says. What a node gives a container is emulated, and nothing else:
//!
//! - the command: `command` or else the image's entrypoint, then `args`, resolved in the image
//!   (the tag `scripts/kind-up` builds and the `ENTRYPOINT` of the Dockerfile's runtime stage);
//! - the environment: exactly the container's `env` (literal values, Secret and ConfigMap keys,
//!   the downward API), plus the image's `PATH`; nothing is inherited from the test;
//! - the filesystem: every volume (ConfigMap, Secret, emptyDir) is mounted under a pod root
//!   folder at its mountPath, and absolute paths in the environment resolve inside that root;
//! - the network: each container port gets a free local port, and cluster DNS is emulated by
//!   rewriting `<service>[.<namespace>[.svc[.cluster.local]]]:<port>` in the environment and in
//!   mounted files to the local address of a pod the Service selects (or of a server the test
//!   stands in for it);
//! - the security context: the process runs as `runAsUser`/`runAsGroup` (else the image's
//!   `USER`) when the test runs as root; mounted ConfigMap and Secret files get their
//!   `defaultMode` and the group `fsGroup`; with `readOnlyRootFilesystem` every folder of the pod
//!   root but the emptyDir volumes is read-only;
//! - probes: readiness is the readinessProbe's `httpGet`; stopping is SIGTERM and a wait of
//!   `terminationGracePeriodSeconds`.
//!
//! Not emulated, and so not checked here: writes to absolute paths outside the pod root,
//! capabilities, seccomp, resource limits and restarts.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodTemplateSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use tempfile::TempDir;
use testbed::child::{free_port, http, terminate};

/// The PATH of the distroless base image the runtime image is built on.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image this node has: its tag, its entrypoint, and where its binaries are on this machine.
#[derive(Clone, Debug)]
pub struct Image {
    pub tag: String,
    pub entrypoint: Vec<String>,
    /// The image's `USER` as (uid, gid).
    pub user: (u32, u32),
    /// Path inside the image -> the binary on this machine.
    pub files: BTreeMap<String, PathBuf>,
}

impl Image {
    /// The runtime image as `scripts/kind-up` builds it from the Dockerfile, holding `binary` (the
    /// `dreampipe` this test run built) where the Dockerfile copies it.
    pub fn runtime(repo: &Path, binary: &Path) -> Image {
        let kind_up = fs::read_to_string(repo.join("scripts/kind-up")).expect("scripts/kind-up");
        let tag = kind_up
            .lines()
            .find(|line| line.contains("docker build") && line.contains("--target runtime"))
            .and_then(|line| line.split_whitespace().skip_while(|w| *w != "-t").nth(1))
            .expect("scripts/kind-up builds the runtime stage with -t <tag>")
            .to_owned();
        let dockerfile = fs::read_to_string(repo.join("Dockerfile")).expect("Dockerfile");
        let stage: Vec<&str> = dockerfile
            .lines()
            .skip_while(|line| !(line.starts_with("FROM ") && line.ends_with(" AS runtime")))
            .skip(1)
            .take_while(|line| !line.starts_with("FROM "))
            .collect();
        let copied = stage
            .iter()
            .find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.first() == Some(&"COPY") && words.get(2)?.ends_with("/dreampipe"))
                    .then(|| words.get(3).map(|w| (*w).to_owned()))?
            })
            .expect("the runtime stage copies the dreampipe binary");
        let entrypoint = stage
            .iter()
            .find_map(|line| line.strip_prefix("ENTRYPOINT "))
            .map(|json| serde_json::from_str::<Vec<String>>(json).expect("exec-form ENTRYPOINT"))
            .expect("the runtime stage has an ENTRYPOINT");
        let user = stage
            .iter()
            .find_map(|line| line.strip_prefix("USER "))
            .and_then(|user| {
                let (uid, gid) = user.trim().split_once(':')?;
                Some((uid.parse().ok()?, gid.parse().ok()?))
            })
            .expect("the runtime stage sets USER <uid>:<gid>");
        Image {
            tag,
            entrypoint,
            user,
            files: BTreeMap::from([(copied, binary.to_owned())]),
        }
    }

    /// The binary an exec-form argv[0] names: an absolute path, or a name looked up on PATH.
    fn resolve(&self, program: &str) -> Option<&PathBuf> {
        if program.starts_with('/') {
            return self.files.get(program);
        }
        IMAGE_PATH
            .split(':')
            .find_map(|dir| self.files.get(&format!("{dir}/{program}")))
    }
}

/// The local address of a Service port: a pod's container port or a stand-in server.
#[derive(Clone, Debug)]
struct Route {
    service: String,
    port: i32,
    local: u16,
}

/// A pod, scheduled (ports allocated) and then started.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    labels: BTreeMap<String, String>,
    container: Container,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    security: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    grace: Duration,
    /// Container port (by number) -> local port.
    ports: BTreeMap<i32, u16>,
    port_names: BTreeMap<String, i32>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Pod {
    fn container_port(&self, port: &IntOrString) -> i32 {
        match port {
            IntOrString::Int(number) => *number,
            IntOrString::String(name) => *self
                .port_names
                .get(name)
                .unwrap_or_else(|| panic!("pod {}: no container port named {name}", self.name)),
        }
    }

    /// The local port of one of the container's ports (by name or number).
    pub fn port(&self, port: &IntOrString) -> u16 {
        let number = self.container_port(port);
        *self
            .ports
            .get(&number)
            .unwrap_or_else(|| panic!("pod {}: port {number} is not declared", self.name))
    }

    /// The port named `http`.
    pub fn http_port(&self) -> u16 {
        self.port(&IntOrString::String("http".to_owned()))
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The last lines the container wrote, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("child status"))
    }

    /// Whether the readiness probe passes now (no probe: the first port accepts connections).
    fn ready(&self) -> bool {
        match self
            .container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
        {
            Some(get) => {
                let path = get.path.as_deref().unwrap_or("/");
                http(self.port(&get.port), "GET", path, None)
                    .is_ok_and(|(status, _)| (200..400).contains(&status))
            }
            None => self
                .ports
                .values()
                .next()
                .is_none_or(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()),
        }
    }
}

/// Namespaced objects and pods of one namespace on this node.
pub struct Node {
    namespace: String,
    image: Image,
    dir: TempDir,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    services: BTreeMap<String, Service>,
    stand_ins: Vec<Route>,
    pods: Vec<Pod>,
}

impl Node {
    pub fn new(namespace: &str, image: Image) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        // Pods may run as another user: they need to reach their own folders.
        set_mode(dir.path(), 0o755);
        Node {
            namespace: namespace.to_owned(),
            image,
            dir,
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            services: BTreeMap::new(),
            stand_ins: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// Stores the Secrets, ConfigMaps and Services among `manifests`; returns the rest.
    pub fn apply(&mut self, manifests: Vec<Value>) -> Vec<Value> {
        let mut rest = Vec::new();
        for manifest in manifests {
            match manifest["kind"].as_str() {
                Some("Secret") => {
                    let secret: Secret = serde_json::from_value(manifest).expect("a Secret");
                    self.add_secret(secret);
                }
                Some("ConfigMap") => {
                    let map: ConfigMap = serde_json::from_value(manifest).expect("a ConfigMap");
                    self.add_config_map(map);
                }
                Some("Service") => {
                    let service: Service = serde_json::from_value(manifest).expect("a Service");
                    self.add_service(service);
                }
                _ => rest.push(manifest),
            }
        }
        rest
    }

    pub fn add_secret(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().expect("Secret name");
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, bytes)| (key, bytes.0))
            .collect();
        for (key, text) in secret.string_data.unwrap_or_default() {
            data.insert(key, text.into_bytes());
        }
        self.secrets.insert(name, data);
    }

    pub fn add_config_map(&mut self, map: ConfigMap) {
        let name = map.metadata.name.clone().expect("ConfigMap name");
        self.config_maps.insert(name, map.data.unwrap_or_default());
    }

    pub fn add_service(&mut self, service: Service) {
        let name = service.metadata.name.clone().expect("Service name");
        self.services.insert(name, service);
    }

    /// Routes `service:port` to a server the test runs in place of the Service's pods.
    pub fn stand_in(&mut self, service: &str, port: i32, local: u16) {
        assert!(
            self.services.contains_key(service),
            "no Service {service} to stand in for"
        );
        self.stand_ins.push(Route {
            service: service.to_owned(),
            port,
            local,
        });
    }

    /// A Secret's value, as a pod would read it.
    pub fn secret(&self, name: &str, key: &str) -> String {
        let bytes = self
            .secrets
            .get(name)
            .and_then(|data| data.get(key))
            .unwrap_or_else(|| panic!("no Secret {name} with key {key}"));
        String::from_utf8(bytes.clone()).expect("a UTF-8 secret")
    }

    /// Schedules the pods of `deployment` (its replicas, ports allocated); starts nothing yet.
    pub fn schedule(&mut self, deployment: &Deployment) {
        let name = deployment.metadata.name.clone().expect("Deployment name");
        let spec = &deployment.spec;
        let labels = pod_labels(&spec.template);
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{name}: the selector {selector:?} does not select its own pods {labels:?}"
        );
        self.add_pods(&name, &spec.template, spec.replicas.unwrap_or(1));
    }

    /// Runs the pod of `job` to completion (starting it with anything else scheduled and not
    /// yet started); returns its exit status.
    pub fn run_job(&mut self, job: &Job, timeout: Duration) -> ExitStatus {
        let name = job.metadata.name.clone().expect("Job name");
        let spec = job.spec.as_ref().expect("Job spec");
        let restart = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref());
        assert!(
            matches!(restart, Some("Never" | "OnFailure")),
            "{name}: a Job's pods restart Never or OnFailure, not {restart:?}"
        );
        self.add_pods(&name, &spec.template, 1);
        self.start();
        let pod_name = format!("{name}-0");
        let deadline = Instant::now() + timeout;
        loop {
            let pod = self.pod_mut(&pod_name);
            if let Some(status) = pod.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "Job {name} did not finish within {timeout:?}; its log:\n{}",
                pod.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn add_pods(&mut self, name: &str, template: &PodTemplateSpec, replicas: i32) {
        let pod_spec = template.spec.as_ref().expect("pod spec");
        assert_eq!(
            pod_spec.containers.len(),
            1,
            "{name}: one container per pod is what the runtime pods have"
        );
        assert!(
            pod_spec.init_containers.is_none(),
            "{name}: init containers are not emulated"
        );
        let labels = pod_labels(template);
        for replica in 0..replicas {
            let container = pod_spec.containers[0].clone();
            let mut ports = BTreeMap::new();
            let mut port_names = BTreeMap::new();
            for port in container.ports.iter().flatten() {
                ports.insert(port.container_port, free_port());
                if let Some(port_name) = &port.name {
                    port_names.insert(port_name.clone(), port.container_port);
                }
            }
            let pod_name = format!("{name}-{replica}");
            let dir = self.dir.path().join(&pod_name);
            fs::create_dir_all(&dir).expect("pod dir");
            set_mode(&dir, 0o755);
            self.pods.push(Pod {
                name: pod_name,
                labels: labels.clone(),
                container,
                volumes: pod_spec.volumes.clone().unwrap_or_default(),
                security: pod_spec.security_context.clone(),
                grace: Duration::from_secs(
                    pod_spec.termination_grace_period_seconds.unwrap_or(30) as u64
                ),
                ports,
                port_names,
                dir,
                child: None,
            });
        }
    }

    /// Every `service:port` the cluster DNS answers, with the local port behind it.
    fn routes(&self) -> Vec<Route> {
        let mut routes = self.stand_ins.clone();
        for (name, service) in &self.services {
            let spec = service.spec.as_ref().expect("Service spec");
            let selector = spec.selector.clone().unwrap_or_default();
            let Some(pod) = self.pods.iter().find(|pod| {
                !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            }) else {
                continue;
            };
            for port in spec.ports.iter().flatten() {
                let target = port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port));
                routes.push(Route {
                    service: name.clone(),
                    port: port.port,
                    local: pod.port(&target),
                });
            }
        }
        routes
    }

    /// `text` with every cluster address of a routed Service replaced by its local address.
    fn resolve_hosts(&self, routes: &[Route], text: &str) -> String {
        let mut out = text.to_owned();
        for route in routes {
            let ns = &self.namespace;
            let service = &route.service;
            // Longest form first, so `svc.ns.svc:80` is not half-matched as `svc.ns`.
            for host in [
                format!("{service}.{ns}.svc.cluster.local"),
                format!("{service}.{ns}.svc"),
                format!("{service}.{ns}"),
                service.clone(),
            ] {
                out = replace_address(
                    &out,
                    &format!("{host}:{}", route.port),
                    &format!("127.0.0.1:{}", route.local),
                );
            }
        }
        out
    }

    fn env_value(&self, pod: &Pod, var: &EnvVar) -> Option<String> {
        if let Some(value) = &var.value {
            return Some(value.clone());
        }
        let source = var.value_from.as_ref()?;
        if let Some(field) = &source.field_ref {
            return Some(match field.field_path.as_str() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => self.namespace.clone(),
                other => panic!("pod {}: fieldRef {other} is not emulated", pod.name),
            });
        }
        if let Some(key) = &source.secret_key_ref {
            let value = self.secrets.get(&key.name).and_then(|d| d.get(&key.key));
            return match value {
                Some(bytes) => Some(String::from_utf8(bytes.clone()).expect("UTF-8 secret")),
                None if key.optional == Some(true) => None,
                None => panic!(
                    "pod {}: env {} needs Secret {} key {}, which does not exist \
                     (CreateContainerConfigError)",
                    pod.name, var.name, key.name, key.key
                ),
            };
        }
        if let Some(key) = &source.config_map_key_ref {
            let value = self
                .config_maps
                .get(&key.name)
                .and_then(|d| d.get(&key.key));
            return match value {
                Some(text) => Some(text.clone()),
                None if key.optional == Some(true) => None,
                None => panic!(
                    "pod {}: env {} needs ConfigMap {} key {}, which does not exist",
                    pod.name, var.name, key.name, key.key
                ),
            };
        }
        panic!(
            "pod {}: env {} has an unsupported source",
            pod.name, var.name
        )
    }

    /// The container's environment as the process sees it.
    fn environment(&self, pod: &Pod, routes: &[Route], root: &Path) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("PATH".to_owned(), IMAGE_PATH.to_owned())]);
        for var in pod.container.env.iter().flatten() {
            let Some(mut value) = self.env_value(pod, var) else {
                continue;
            };
            value = self.resolve_hosts(routes, &value);
            // Listening on the pod's own ports: the pod's local ports on this machine.
            for (container_port, local) in &pod.ports {
                value = replace_address(
                    &value,
                    &format!("0.0.0.0:{container_port}"),
                    &format!("127.0.0.1:{local}"),
                );
            }
            if value.starts_with('/') {
                value = format!("{}{value}", root.display());
            }
            env.insert(var.name.clone(), value);
        }
        env
    }

    /// Writes the pod's volumes under `root` at their mount paths, with the modes and group
    /// the kubelet gives them; the root itself is read-only when the container says so.
    fn mount(&self, pod: &Pod, routes: &[Route], root: &Path) {
        let fs_group = pod.security.as_ref().and_then(|s| s.fs_group);
        let group_file = |path: &Path, mode: i32| {
            set_mode(path, mode);
            if let Some(group) = fs_group
                && running_as_root()
            {
                std::os::unix::fs::chown(path, Some(0), Some(group as u32)).expect("chown");
            }
        };
        let mut writable = Vec::new();
        for mount in pod.container.volume_mounts.iter().flatten() {
            assert!(
                mount.sub_path.is_none(),
                "pod {}: subPath is not emulated",
                pod.name
            );
            let target = root.join(mount.mount_path.trim_start_matches('/'));
            fs::create_dir_all(&target).expect("mount point");
            let volume = pod
                .volumes
                .iter()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("pod {}: no volume {}", pod.name, mount.name));
            if let Some(source) = &volume.config_map {
                assert!(source.items.is_none(), "ConfigMap items are not emulated");
                let data = self.config_maps.get(&source.name).unwrap_or_else(|| {
                    panic!("pod {}: ConfigMap {} does not exist", pod.name, source.name)
                });
                for (file, text) in data {
                    let path = target.join(file);
                    fs::write(&path, self.resolve_hosts(routes, text)).expect("write config");
                    group_file(&path, source.default_mode.unwrap_or(0o644));
                }
            } else if let Some(source) = &volume.secret {
                assert!(source.items.is_none(), "Secret items are not emulated");
                let secret_name = source.secret_name.as_deref().expect("secretName");
                let data = self.secrets.get(secret_name).unwrap_or_else(|| {
                    panic!("pod {}: Secret {secret_name} does not exist", pod.name)
                });
                for (file, bytes) in data {
                    let path = target.join(file);
                    fs::write(&path, bytes).expect("write secret");
                    group_file(&path, source.default_mode.unwrap_or(0o644));
                }
            } else {
                assert!(
                    volume.empty_dir.is_some(),
                    "pod {}: volume {} is neither ConfigMap, Secret nor emptyDir",
                    pod.name,
                    mount.name
                );
                writable.push(target);
            }
        }
        let read_only = pod
            .container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        seal(root, if read_only { 0o555 } else { 0o777 }, &writable);
    }

    /// The (uid, gid) the container runs as.
    fn identity(&self, pod: &Pod) -> (u32, u32) {
        let container = pod.container.security_context.as_ref();
        let pod_level = pod.security.as_ref();
        let uid = container
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_level.and_then(|s| s.run_as_user))
            .map_or(self.image.user.0, |uid| uid as u32);
        let gid = container
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_level.and_then(|s| s.run_as_group))
            .map_or(self.image.user.1, |gid| gid as u32);
        let non_root = container
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod_level.and_then(|s| s.run_as_non_root))
            .unwrap_or(false);
        assert!(
            !(non_root && uid == 0),
            "pod {}: runAsNonRoot with user 0 (CreateContainerConfigError)",
            pod.name
        );
        (uid, gid)
    }

    /// Starts every scheduled pod (all at once, as a node would).
    pub fn start(&mut self) {
        let routes = self.routes();
        let mut started = Vec::new();
        for pod in &self.pods {
            if pod.child.is_some() {
                continue;
            }
            let root = pod.dir.join("root");
            fs::create_dir_all(&root).expect("pod root");
            self.mount(pod, &routes, &root);
            let env = self.environment(pod, &routes, &root);
            let image = pod.container.image.as_deref().expect("container image");
            assert_eq!(
                image, self.image.tag,
                "pod {}: image {image} is not one scripts/kind-up builds",
                pod.name
            );
            let mut argv = pod
                .container
                .command
                .clone()
                .unwrap_or_else(|| self.image.entrypoint.clone());
            argv.extend(pod.container.args.clone().unwrap_or_default());
            let program = self
                .image
                .resolve(&argv[0])
                .unwrap_or_else(|| panic!("pod {}: {} is not in image {image}", pod.name, argv[0]));
            let program = self.install(program);
            let log = fs::File::create(pod.log()).expect("log file");
            let mut command = Command::new(&program);
            if running_as_root() {
                let (uid, gid) = self.identity(pod);
                command.uid(uid).gid(gid);
            }
            let child = command
                .args(&argv[1..])
                .env_clear()
                .envs(&env)
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("pod {}: start {}: {e}", pod.name, program.display()));
            started.push((pod.name.clone(), child));
        }
        for (name, child) in started {
            self.pod_mut(&name).child = Some(child);
        }
    }

    /// The image's copy of a binary: a link in the node's folder, where any user may run it.
    fn install(&self, binary: &Path) -> PathBuf {
        let layer = self.dir.path().join("image");
        fs::create_dir_all(&layer).expect("image folder");
        set_mode(&layer, 0o755);
        let installed = layer.join(binary.file_name().expect("a binary file name"));
        if !installed.exists() && fs::hard_link(binary, &installed).is_err() {
            fs::copy(binary, &installed).expect("copy the binary into the image folder");
        }
        set_mode(&installed, 0o755);
        installed
    }

    fn pod_mut(&mut self, name: &str) -> &mut Pod {
        self.pods
            .iter_mut()
            .find(|p| p.name == name)
            .expect("a scheduled pod")
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The first pod of a Deployment.
    pub fn pod(&self, deployment: &str) -> &Pod {
        let name = format!("{deployment}-0");
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Waits until every pod is ready; panics naming the pods that are not (with their logs),
    /// or at once when one exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            for pod in &mut self.pods {
                if let Some(status) = pod.exited() {
                    panic!(
                        "pod {} exited with {status}; its log:\n{}",
                        pod.name,
                        pod.log_tail()
                    );
                }
            }
            let waiting: Vec<&Pod> = self.pods.iter().filter(|p| !p.ready()).collect();
            if waiting.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let report: Vec<String> = waiting
                    .iter()
                    .map(|p| format!("pod {} is not ready; its log:\n{}", p.name, p.log_tail()))
                    .collect();
                panic!("{}", report.join("\n\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every pod as the kubelet does (SIGTERM, then the grace period); returns the exit
    /// statuses by pod.
    pub fn stop(&mut self) -> BTreeMap<String, ExitStatus> {
        self.pods
            .iter_mut()
            .filter_map(|pod| {
                let grace = pod.grace;
                let status = terminate(pod.child.as_mut()?, grace);
                Some((pod.name.clone(), status))
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            if let Some(child) = pod.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Read-only folders cannot be emptied by a user that is not root: open them again.
        seal(self.dir.path(), 0o755, &[]);
    }
}

/// Sets every folder below `dir` (and `dir`) to `mode`, leaving the `writable` folders (and
/// what is below them) open to everyone, as emptyDir volumes are.
fn seal(dir: &Path, mode: u32, writable: &[PathBuf]) {
    if writable.iter().any(|w| w == dir) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                seal(&entry.path(), mode, writable);
            }
        }
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
}

fn pod_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `text` with `address` replaced by `local` where it stands as a whole host:port (after the
/// start, `/` or `@`, and before the end or a character that cannot continue a port).
fn replace_address(text: &str, address: &str, local: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(address) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + address.len()..].chars().next();
        let starts = before.is_none_or(|c| c == '/' || c == '@');
        let ends = after.is_none_or(|c| !c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        out.push_str(if starts && ends { local } else { address });
        rest = &rest[at + address.len()..];
    }
    out.push_str(rest);
    out
}

fn set_mode(path: &Path, mode: i32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode as u32)).expect("chmod");
}
