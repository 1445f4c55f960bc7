//! The one test environment of the operator's integration tests: both emulators on port 0, the CRDs, namespaces,
//! the operator's credential and SubscriptionBinding, a controller configuration with short periods, and the
//! controller running in-process.
//!
//! ```ignore
//! let mut env = TestEnv::builder()
//!     .namespaces(&["team-a", "team-b"])          // created; the default binding covers team-a only
//!     .bind(&["team-a"], json!({"allowedRoles": ["Reader"]}))
//!     .lro(Duration::from_millis(200))             // simulated long-running operations
//!     .resync(Duration::from_secs(1))              // and stalled requeue, unless .stalled(..) says otherwise
//!     .configure(|c| c.principal_wait = Duration::from_secs(6))
//!     .start()
//!     .await;
//! env.stop_controller().await;                     // also start_controller, cancel_controller, restart_controller
//! env.stop().await;                                // ends the test: the controller must stop cleanly
//! ```
//!
//! Defaults: namespace `team-a` bound to the world's subscription (resource groups `rg-*`, no limits), LRO 150 ms,
//! resync and stalled requeue 60 s, LRO polls and back-off in milliseconds ([`common::fast_config`]), the controller
//! started, logs not captured, the system clock. Other switches: `.world(..)` edits the simulated cloud before it
//! starts, `.crds(..)` installs other CRDs, `.no_binding()`, `.without_controller()`, `.empty()` (emulators only),
//! `.capture_logs()` (then [`TestEnv::logs`]), `.manual_clock()` (then [`TestEnv::advance_clock`] moves the
//! operator's clock and the simulator's together).
//!
//! Every test gets its own emulators, world and controller: tests of this binary run in parallel and share nothing
//! but the process (the log subscriber, [`crate::common::LogCapture`]). Settings a test depends on (resync period,
//! stalled requeue, intervals) are set by the test through the builder.

use std::time::Duration;

use azml_arm_simulator::{RunningSim, World};
use azml_kube_emulator::RunningServer;
use azml_operator::clock::ManualClock;
use azml_operator::controller::ControllerConfig;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use serde_json::{Value, json};

use crate::common::{self, Emulators, LogCapture, RunningController};

/// The namespace the operator runs in (its credential Secrets live there).
pub const OPERATOR_NS: &str = "azml-system";
/// The bound team namespace most tests use.
pub const TEAM_A: &str = "team-a";

/// How long [`TestEnv::stop_controller`] waits for the controller to end.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Edits the simulator's world before it starts.
type WorldEdit = Box<dyn FnOnce(&mut World) + Send>;
/// Edits the controller configuration.
type ConfigEdit = Box<dyn FnOnce(&mut ControllerConfig) + Send>;

/// Builds a [`TestEnv`]; see the module documentation.
#[must_use]
pub struct TestEnvBuilder {
    lro: Duration,
    resync: Duration,
    stalled: Option<Duration>,
    namespaces: Vec<String>,
    binding: Option<(Vec<String>, Value)>,
    crds: Option<Vec<CustomResourceDefinition>>,
    world: Vec<WorldEdit>,
    configure: Vec<ConfigEdit>,
    clock: Option<ManualClock>,
    install: bool,
    controller: bool,
    capture_logs: bool,
}

impl TestEnvBuilder {
    fn new() -> TestEnvBuilder {
        TestEnvBuilder {
            lro: Duration::from_millis(150),
            resync: Duration::from_secs(60),
            stalled: None,
            namespaces: vec![TEAM_A.into()],
            binding: Some((vec![TEAM_A.into()], json!({}))),
            crds: None,
            world: Vec::new(),
            configure: Vec::new(),
            clock: None,
            install: true,
            controller: true,
            capture_logs: false,
        }
    }

    /// Duration of every simulated long-running operation (default 150 ms).
    pub fn lro(mut self, duration: Duration) -> Self {
        self.lro = duration;
        self
    }

    /// The controller's resync period, and its stalled requeue unless [`TestEnvBuilder::stalled`] sets it (default
    /// 60 s: no periodic resync falls into a test unless it asks for one).
    pub fn resync(mut self, period: Duration) -> Self {
        self.resync = period;
        self
    }

    /// The controller's stalled requeue (default: the resync period).
    pub fn stalled(mut self, period: Duration) -> Self {
        self.stalled = Some(period);
        self
    }

    /// Team namespaces to create besides the operator's (default `team-a`).
    pub fn namespaces(mut self, names: &[&str]) -> Self {
        self.namespaces = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// The operator's client-secret Secret and the binding `sandbox` letting `namespaces` use the world's
    /// subscription in resource groups `rg-*`, with `limits` as extra spec fields (default: `team-a`, no limits).
    pub fn bind(mut self, namespaces: &[&str], limits: Value) -> Self {
        self.binding = Some((namespaces.iter().map(|n| (*n).to_owned()).collect(), limits));
        self
    }

    /// Neither the operator's Secret nor the default binding: the test creates its own.
    pub fn no_binding(mut self) -> Self {
        self.binding = None;
        self
    }

    /// These CRDs instead of the operator's own.
    pub fn crds(mut self, crds: Vec<CustomResourceDefinition>) -> Self {
        self.crds = Some(crds);
        self
    }

    /// Edits the simulated cloud before the simulator starts (principals, subscriptions, resources, roles).
    pub fn world(mut self, edit: impl FnOnce(&mut World) + Send + 'static) -> Self {
        self.world.push(Box::new(edit));
        self
    }

    /// Edits the controller configuration after the builder's settings (any field; applied in order).
    pub fn configure(mut self, edit: impl FnOnce(&mut ControllerConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(edit));
        self
    }

    /// The operator's wall clock (default: the system clock); see `azml_operator::clock`.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The operator's clock is a [`ManualClock`] running with the system clock, which [`TestEnv::advance_clock`]
    /// moves together with the simulator's.
    pub fn manual_clock(self) -> Self {
        self.clock(ManualClock::ahead_of_system())
    }

    /// Sets everything up but does not start the controller ([`TestEnv::start_controller`] does).
    pub fn without_controller(mut self) -> Self {
        self.controller = false;
        self
    }

    /// The emulators only: no CRDs, namespaces, Secret or binding, and no controller.
    pub fn empty(mut self) -> Self {
        self.install = false;
        self.controller = false;
        self
    }

    /// Captures everything logged while this environment lives, for [`TestEnv::logs`].
    pub fn capture_logs(mut self) -> Self {
        self.capture_logs = true;
        self
    }

    /// Starts the emulators, installs everything and (unless told otherwise) the controller.
    pub async fn start(self) -> TestEnv {
        let capture = if self.capture_logs { Some(LogCapture::start()) } else { None };
        common::init_test_tracing();
        let mut world = World::default_sandbox();
        for edit in self.world {
            edit(&mut world);
        }
        let Emulators { kube, client, sim } = Emulators::start(&world, self.lro).await;
        if self.install {
            common::install_crds(&client, self.crds.unwrap_or_else(azml_operator::api::all_crds)).await;
            let mut namespaces: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
            namespaces.push(OPERATOR_NS);
            common::create_namespaces(&client, &namespaces).await;
        }
        if let Some((bound, limits)) = self.binding.filter(|_| self.install) {
            let bound: Vec<&str> = bound.iter().map(String::as_str).collect();
            common::seed_operator_binding(&client, &world, OPERATOR_NS, &bound, limits).await;
        }
        let mut config = common::fast_config(&sim, OPERATOR_NS);
        config.resync_period = self.resync;
        config.stalled_requeue = self.stalled.unwrap_or(self.resync);
        if let Some(clock) = &self.clock {
            config.arm.clock = clock.clock();
        }
        for edit in self.configure {
            edit(&mut config);
        }
        let mut env = TestEnv { kube, client, sim, world, config, clock: self.clock, controller: None, capture };
        if self.controller {
            env.start_controller();
        }
        env
    }
}

/// Emulators, a configuration and (usually) a running controller; see the module documentation.
pub struct TestEnv {
    /// The Kubernetes API emulator.
    pub kube: RunningServer,
    /// A client of it.
    pub client: Client,
    /// The ARM and Entra ID simulator.
    pub sim: RunningSim,
    /// The simulated cloud's well-known names (subscription, resource group, storage account, principals).
    pub world: World,
    /// The configuration [`TestEnv::start_controller`] runs the controller with.
    pub config: ControllerConfig,
    /// The operator's clock, when the test set one.
    pub clock: Option<ManualClock>,
    controller: Option<RunningController>,
    capture: Option<crate::common::CaptureGuard>,
}

impl TestEnv {
    /// A builder with the defaults most tests use.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::new()
    }

    /// Runs `azml-sandbox plan -f` on `object` (written as YAML) against this environment, as an operator would: its
    /// Kubernetes API through a kubeconfig, its simulated Azure with the CA trusted, no Azure settings from the
    /// environment. Asserts success; returns standard output.
    pub async fn plan_file(&self, object: &impl serde::Serialize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        self.kube.write_kubeconfig(&kubeconfig).unwrap();
        let ca = dir.path().join("ca.pem");
        self.sim.write_ca(&ca).unwrap();
        let file = dir.path().join("object.yaml");
        std::fs::write(&file, serde_yaml::to_string(object).unwrap()).unwrap();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_azml-sandbox"))
            .args(["plan", "-f"])
            .arg(&file)
            .args(["--arm-endpoint", &self.sim.endpoint, "--authority-host", &self.sim.endpoint])
            .arg("--extra-ca-file")
            .arg(&ca)
            .args(["--operator-namespace", OPERATOR_NS])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("AZURE_RESOURCE_MANAGER_ENDPOINT")
            .env_remove("AZURE_AUTHORITY_HOST")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
        stdout
    }

    /// Starts a controller with [`TestEnv::config`] (a fresh one, as a restarted process).
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "a controller is running already");
        self.controller = Some(RunningController::start(self.client.clone(), self.config.clone()));
    }

    /// Stops the controller and checks it ended cleanly (no panic, within 20 s). Nothing when none runs.
    pub async fn stop_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.stop(STOP_WITHIN).await;
        }
    }

    /// Cancels the controller without checking how it ended.
    pub async fn cancel_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.cancel(STOP_WITHIN).await;
        }
    }

    /// Cancels the controller and starts a new one (empty caches, like a restarted operator).
    pub async fn restart_controller(&mut self) {
        self.cancel_controller().await;
        self.start_controller();
    }

    /// Ends the test: stops the controller cleanly.
    pub async fn stop(mut self) {
        self.stop_controller().await;
    }

    /// Moves the simulator's clock (Azure's) and the operator's [`TestEnvBuilder::manual_clock`] forward by `by`.
    pub fn advance_clock(&self, by: Duration) {
        self.sim.handle.advance_clock(by);
        self.clock.as_ref().expect("the environment was built without manual_clock()").advance(by);
    }

    /// Everything logged since this environment started (and by tests running alongside), when it was built with
    /// [`TestEnvBuilder::capture_logs`].
    pub fn logs(&self) -> String {
        assert!(self.capture.is_some(), "the environment was built without capture_logs()");
        LogCapture::get().contents()
    }
}

/// Declares a module's own environment type, `struct $name(TestEnv)`, which dereferences to [`TestEnv`]: the module
/// adds its helpers (`fn api(&self)`, `async fn wait_ready(..)`) to it, its tests read `env.sim`, `env.client`.
macro_rules! env_type {
    ($name:ident) => {
        struct $name(crate::env::TestEnv);

        impl std::ops::Deref for $name {
            type Target = crate::env::TestEnv;
            fn deref(&self) -> &crate::env::TestEnv {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut crate::env::TestEnv {
                &mut self.0
            }
        }

        impl $name {
            /// Ends the test: stops the controller cleanly.
            #[allow(dead_code)]
            async fn stop(self) {
                self.0.stop().await
            }
        }
    };
}
pub(crate) use env_type;
