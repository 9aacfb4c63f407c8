//! The GPU context: adapter choice, feature and limit negotiation, buffer helpers, timestamps.
//!
//! This is the only file that touches the parts of the wgpu API that change between releases
//! (instance and device creation, polling, error capture, mapping). Kernels get a `&GpuContext`
//! and use its helpers.
//!
//! Adapter choice honours `WGPU_BACKEND` (e.g. `vulkan`) and `WGPU_ADAPTER_NAME` (a case-insensitive
//! substring of the adapter name); otherwise the high-performance adapter is taken. Limits start
//! from WebGPU's defaults and are raised only where the kernels need more, after checking the
//! adapter has it. wgpu's validation errors, out-of-memory and device loss are captured and
//! returned as [`Error::Gpu`] by [`GpuContext::check`] instead of panicking.
//!
//! Shaders are compiled as trusted code ([`ShaderChecks`]): wgpu's loop bounding, index clamping
//! and division checks cost up to 12% of the FMA rate and 10% of the indexer's time on an H100
//! (docs/PERF.md), and our shaders do not need them. `ESS_SHADER_CHECKS=on` puts them back.

use crate::error::{Error, Result};
use bytemuck::Pod;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Workgroup memory the kernels need (top-k and resolve use 25 KiB, sparse MLA 24 KiB).
pub const NEED_WORKGROUP_STORAGE: u32 = 32 * 1024;
/// Invocations per workgroup the kernels need (indexer with 64 heads, sparse MLA).
pub const NEED_INVOCATIONS: u32 = 256;
/// Storage buffers bound by the largest kernel (lse merge, sparse MLA).
pub const NEED_STORAGE_BUFFERS: u32 = 8; // sparse MLA's `attend` binds 8
/// Storage buffers the coop indexer binds (its own 5, and a fused gather's 5:
/// `shaders/indexer_gather.wgsl`); the coop path needs them.
pub const COOP_STORAGE_BUFFERS: u32 = 10;

/// Which of wgpu's runtime checks our shaders are compiled with.
///
/// wgpu (through naga) can make any shader safe: it bounds every loop with a hidden counter
/// (`force_loop_bounding`), clamps every index into a fixed-size or workgroup array
/// (`bounds_checks`) and guards integer division. For untrusted WGSL that is right; for ours it
/// costs FMA rate (the probe kernel: 52 → 59 TFLOP/s on an H100 without the loop counter) and the
/// clamps sit in the kernels' inner loops. [`ShaderChecks::Trusted`], the default, compiles
/// without them, on this reasoning:
/// - every loop is bounded by a validated size (< 2^31, checked by [`crate::config`] and the
///   kernels' constructors), so no loop counter can wrap and no loop is infinite;
/// - every index into a workgroup or private array is in range by construction (each shader
///   states its layout; the tests run every shape class, including sizes that are not multiples
///   of the workgroup tile);
/// - divisors are constants or validated non-zero sizes;
/// - storage-buffer accesses stay bounds-checked where the driver does it (Vulkan's robust
///   buffer access, which wgpu enables), which is what the kernels' "ids out of range read junk,
///   never fault" contract relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ShaderChecks {
    /// wgpu's checks off (the default; see above).
    Trusted,
    /// wgpu's full checks, as for untrusted code: `ESS_SHADER_CHECKS=on`.
    Checked,
}

impl ShaderChecks {
    /// From `ESS_SHADER_CHECKS` (`on` or `off`; unset = off).
    pub fn from_env() -> Result<Self> {
        match std::env::var("ESS_SHADER_CHECKS").as_deref() {
            Err(_) | Ok("off") | Ok("") => Ok(ShaderChecks::Trusted),
            Ok("on") => Ok(ShaderChecks::Checked),
            Ok(other) => Err(Error::config(
                "ESS_SHADER_CHECKS",
                other,
                "`on` (wgpu's runtime checks) or `off` (the default)",
            )),
        }
    }

    fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::Checked => wgpu::ShaderRuntimeChecks::checked(),
            ShaderChecks::Trusted => wgpu::ShaderRuntimeChecks::unchecked(),
        }
    }
}

/// One pipeline as it was built: enough to compile it again outside wgpu (the
/// `pipeline_stats` example asks the driver what it made of each).
#[derive(Clone, Debug)]
pub struct PipelineSource {
    pub label: String,
    pub source: &'static str,
    pub entry: String,
    pub constants: Vec<(String, f64)>,
}

/// What the context found and asked for, printable and serialisable.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Optional features this context enabled.
    pub features: Vec<String>,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub subgroup_size: (u32, u32),
    pub timestamp_period_ns: f32,
    pub shader_checks: ShaderChecks,
    /// The matrix path in use and why.
    pub matrix: String,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "adapter   {} ({}, {})",
            self.name, self.backend, self.device_type
        )?;
        writeln!(f, "driver    {} {}", self.driver, self.driver_info)?;
        writeln!(
            f,
            "features  {}",
            if self.features.is_empty() {
                "none".into()
            } else {
                self.features.join(", ")
            }
        )?;
        writeln!(
            f,
            "limits    storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, \
             {} invocations/workgroup, subgroup {}..{}",
            self.max_storage_buffer_binding_size >> 20,
            self.max_buffer_size >> 20,
            self.max_compute_workgroup_storage_size >> 10,
            self.max_compute_invocations_per_workgroup,
            self.subgroup_size.0,
            self.subgroup_size.1
        )?;
        write!(
            f,
            "shaders   {}",
            match self.shader_checks {
                ShaderChecks::Trusted =>
                    "trusted: wgpu's runtime checks off (ESS_SHADER_CHECKS=on restores them)",
                ShaderChecks::Checked => "wgpu's runtime checks on (ESS_SHADER_CHECKS=on)",
            }
        )?;
        write!(f, "\nmatrix    {}", self.matrix)
    }
}

/// Which units the matrix kernels multiply on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MatrixPath {
    /// Cooperative matrices (tensor cores): 16 × 16 × 16, f16 operands, f32 accumulation.
    Coop,
    /// The f32 FMA units (every adapter).
    Fma,
}

impl std::fmt::Display for MatrixPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatrixPath::Coop => "coop",
            MatrixPath::Fma => "fma",
        })
    }
}

/// `ESS_MATRIX`: `auto` (the default: coop where the adapter offers it), `coop` (an error where
/// it does not) or `fma`.
fn matrix_choice() -> Result<Option<MatrixPath>> {
    match std::env::var("ESS_MATRIX").as_deref() {
        Err(_) | Ok("auto") | Ok("") => Ok(None),
        Ok("coop") => Ok(Some(MatrixPath::Coop)),
        Ok("fma") => Ok(Some(MatrixPath::Fma)),
        Ok(other) => Err(Error::config(
            "ESS_MATRIX",
            crate::limits::shown(other),
            "auto, coop, fma",
        )),
    }
}

/// Why the adapter cannot run the coop path (`None`: it can). It needs the experimental
/// cooperative-matrix feature with a 16 × 16 × 16 f16 → f32 configuration, f16 in shaders, and
/// subgroups of exactly 32 (the kernels map 32 invocations to one subgroup).
fn coop_missing(adapter: &wgpu::Adapter) -> Option<String> {
    let need = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    if !adapter.features().contains(need) {
        return Some("no cooperative matrices or no f16 in shaders".into());
    }
    let f16_f32 = adapter.cooperative_matrix_properties().iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !f16_f32 {
        return Some("no 16×16×16 f16 → f32 configuration".into());
    }
    let have = adapter.limits().max_storage_buffers_per_shader_stage;
    if have < COOP_STORAGE_BUFFERS {
        return Some(format!(
            "{have} storage buffers per shader stage (the coop indexer binds {COOP_STORAGE_BUFFERS})"
        ));
    }
    let info = adapter.get_info();
    if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        return Some(format!(
            "subgroups of {}..{} invocations (the kernels need 32)",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    None
}

/// Owns adapter, device and queue; created once, shared by every kernel.
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    /// GPU timestamps inside compute passes are available.
    pub timestamps: bool,
    /// Max threads per workgroup granted (≥ 256); top-k uses up to 1024.
    pub max_invocations: u32,
    /// Where the matrix kernels multiply ([`MatrixPath`], chosen by `ESS_MATRIX`).
    pub matrix: MatrixPath,
    /// `MAPPABLE_PRIMARY_BUFFERS` is on: storage buffers can live in host RAM (see
    /// [`GpuContext::host_buffer`]), so shaders read and write host memory directly.
    pub mappable: bool,
    errors: Arc<Mutex<Vec<String>>>,
    built: Mutex<Vec<PipelineSource>>,
    /// Every pipeline built, by (label, source, entry, constants): a kernel built twice on one
    /// context compiles once (engines, benchmarks and calibration runs share them).
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

/// What makes two pipelines the same: label, WGSL text, entry point, override constants (bits).
type PipelineKey = (String, usize, String, Vec<(String, u64)>);

impl GpuContext {
    /// Pick an adapter (see module docs) and open a device with the limits the kernels need.
    pub fn new() -> Result<Self> {
        block_on("GpuContext::new", Self::new_async())
    }

    /// [`GpuContext::new`] without blocking: how a browser page opens one (WebGPU's adapter and
    /// device arrive through the page's event loop).
    pub async fn new_async() -> Result<Self> {
        let backends = match std::env::var("WGPU_BACKEND") {
            Ok(names) => {
                let b = wgpu::Backends::from_comma_list(&names);
                // every name must be one wgpu knows: an unknown one is not silently dropped
                let known = [
                    "vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "gl", "opengl", "gles",
                    "webgpu",
                ];
                let unknown = names
                    .split(',')
                    .map(|n| n.trim().to_lowercase())
                    .find(|n| !known.contains(&n.as_str()));
                if b.is_empty() || unknown.is_some() {
                    return Err(Error::config(
                        "WGPU_BACKEND",
                        crate::limits::shown(&names),
                        "a comma list of vulkan, metal, dx12, gl (webgpu in a browser)",
                    ));
                }
                b
            }
            Err(_) => wgpu::Backends::all(),
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(backends).await;
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(wanted) => {
                let w = wanted.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&w))
                    .ok_or(Error::AdapterNotFound {
                        wanted,
                        available: names,
                    })?
            }
            Err(_) => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|_| Error::NoAdapter {
                    backends: format!("{backends:?}"),
                })?,
        };
        Self::from_adapter(adapter).await
    }

    async fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let have = adapter.limits();
        let need = |what: &str, need: u64, have: u64| -> Result<()> {
            if have < need {
                return Err(Error::Unsupported {
                    what: what.into(),
                    need: need.to_string(),
                    have: have.to_string(),
                });
            }
            Ok(())
        };
        need(
            "max_compute_workgroup_storage_size",
            NEED_WORKGROUP_STORAGE as u64,
            have.max_compute_workgroup_storage_size as u64,
        )?;
        need(
            "max_compute_invocations_per_workgroup",
            NEED_INVOCATIONS as u64,
            have.max_compute_invocations_per_workgroup as u64,
        )?;
        need(
            "max_compute_workgroup_size_x",
            NEED_INVOCATIONS as u64,
            have.max_compute_workgroup_size_x as u64,
        )?;
        need(
            "max_storage_buffers_per_shader_stage",
            NEED_STORAGE_BUFFERS as u64,
            have.max_storage_buffers_per_shader_stage as u64,
        )?;

        let max_invocations = have
            .max_compute_invocations_per_workgroup
            .min(have.max_compute_workgroup_size_x)
            .min(1024);
        let limits = wgpu::Limits {
            // Caches are large: take every byte the adapter allows per buffer and per binding.
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            max_compute_workgroup_storage_size: NEED_WORKGROUP_STORAGE,
            max_compute_invocations_per_workgroup: max_invocations,
            max_compute_workgroup_size_x: max_invocations,
            // the kernels use at most NEED_STORAGE_BUFFERS; the coop indexer with a fused gather
            // (`indexer_gather.wgsl`) COOP_STORAGE_BUFFERS, where the adapter has them
            max_storage_buffers_per_shader_stage: have
                .max_storage_buffers_per_shader_stage
                .min(COOP_STORAGE_BUFFERS),
            ..wgpu::Limits::default()
        };

        // Optional: GPU timestamps (else wall clock), and host-RAM storage buffers for the
        // zero-copy host store (else the host store is process memory, moved by the CPU).
        // Timestamps inside encoders time plain buffer copies (the transfer benchmark's peaks).
        let optional = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        let mut features = adapter.features() & optional;
        let missing = coop_missing(&adapter);
        let matrix = match (matrix_choice()?, &missing) {
            (Some(MatrixPath::Fma), _) | (None, Some(_)) => MatrixPath::Fma,
            (Some(MatrixPath::Coop), Some(why)) => {
                return Err(Error::Unsupported {
                    what: "the coop matrix path (ESS_MATRIX=coop)".into(),
                    need: "cooperative matrices 16×16×16 f16 → f32, f16, subgroups of 32".into(),
                    have: why.clone(),
                });
            }
            (_, None) => MatrixPath::Coop,
        };
        let experimental = match matrix {
            MatrixPath::Coop => {
                features |=
                    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
                // SAFETY: wgpu's experimental cooperative matrices; the kernels use only the
                // configuration the adapter lists (checked by `coop_missing`), and the coop
                // path is tested against the reference on the GPU that runs it.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            }
            MatrixPath::Fma => wgpu::ExperimentalFeatures::disabled(),
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("ess-wgpu"),
                required_features: features,
                required_limits: limits,
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("request_device failed: {e}")))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            sink.lock()
                .unwrap()
                .push(format!("device lost ({reason:?}): {msg}"));
        });

        let info = adapter.get_info();
        let report = AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            max_compute_workgroup_storage_size: have.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: have.max_compute_invocations_per_workgroup,
            subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
            timestamp_period_ns: queue.get_timestamp_period(),
            shader_checks: ShaderChecks::from_env()?,
            matrix: match (matrix, &missing) {
                (MatrixPath::Coop, _) => "coop: cooperative matrices 16×16×16 f16 → f32 (ESS_MATRIX=fma for the FMA path)".into(),
                (MatrixPath::Fma, Some(why)) => format!("fma: f32 FMA units ({why})"),
                (MatrixPath::Fma, None) => "fma: f32 FMA units (ESS_MATRIX=fma; the adapter offers coop)".into(),
            },
        };
        Ok(GpuContext {
            adapter,
            device,
            queue,
            report,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_invocations,
            mappable: features.contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            matrix,
            errors,
            built: Mutex::new(Vec::new()),
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// Every pipeline built so far, in order.
    pub fn pipelines_built(&self) -> Vec<PipelineSource> {
        self.built.lock().unwrap().clone()
    }

    /// Timestamps can be written between any commands of an encoder, not only around passes.
    pub fn encoder_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    }

    /// Largest buffer that can be bound as one storage binding.
    pub fn max_binding(&self) -> u64 {
        self.device
            .limits()
            .max_storage_buffer_binding_size
            .min(self.device.limits().max_buffer_size)
    }

    /// Wait for all submitted work, then turn any captured wgpu error into `Err`.
    pub fn check(&self) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.errors()?;
        polled
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("poll failed: {e}")))
    }

    /// Submit one command buffer: every submission of the crate goes through here (the engine,
    /// the cache's one-off helpers, the benchmarks, `read` and `run_pass`). With
    /// [`GpuContext::wait_for`] and [`GpuContext::errors`], this is how the engine runs steps
    /// without waiting for each.
    pub fn submit(&self, enc: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit([enc.finish()])
    }

    /// Wait until submission `index` has run (and its map callbacks fired), then check errors.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        });
        self.errors()?;
        polled
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("poll failed: {e}")))
    }

    /// Fire whatever callbacks are ready, without waiting.
    pub fn poll(&self) {
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Any wgpu error captured so far as `Err` (does not wait for the GPU).
    pub fn errors(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("\n");
        errs.clear();
        Err(Error::Gpu(msg))
    }

    /// A buffer the CPU maps to read what the GPU copied into it.
    pub fn readback_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of `size` bytes (rounded up to 4), readable back and writable from the CPU.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        let size = size.max(4).next_multiple_of(4);
        // every storage buffer here is bound whole: over the binding limit it could be made but
        // not used, and wgpu would report it later as a cascade of validation errors
        if size > self.max_binding() {
            return Err(Error::Unsupported {
                what: format!("{label} in one storage binding (reduce the batch or the context)"),
                need: format!("{size} bytes"),
                have: format!("a binding limit of {} bytes", self.max_binding()),
            });
        }
        self.allocate(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Create a buffer, catching an out-of-memory or validation error of this one allocation and
    /// reporting it as such, once, with its label and size (not as a cascade of later errors).
    fn allocate(&self, desc: &wgpu::BufferDescriptor) -> Result<wgpu::Buffer> {
        // in a browser an error scope resolves only through the page's event loop, which cannot
        // run while this waits: there the allocation's errors reach the uncaptured-error
        // handler, reported by the next `check` or `errors`
        if cfg!(target_arch = "wasm32") {
            return Ok(self.device.create_buffer(desc));
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(desc);
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        let label = desc.label.unwrap_or("a buffer");
        let mib = desc.size as f64 / 1048576.0;
        if oom.is_some() {
            return Err(Error::Gpu(format!(
                "out of memory allocating {label} ({mib:.1} MiB): reduce the batch, the context \
                 or the layers (--set batch=…, --set context=…, --set layers=…), or the device budget"
            )));
        }
        if let Some(e) = invalid {
            return Err(Error::Gpu(format!(
                "allocating {label} ({mib:.1} MiB): {e}"
            )));
        }
        Ok(buffer)
    }

    /// A storage buffer in host RAM that shaders read and write over the bus (zero-copy), and
    /// the CPU reads by mapping. `MAP_READ` without `MAP_WRITE` is what makes wgpu's Vulkan backend
    /// place it in host-visible cached memory, not in VRAM (GPU.md). Needs [`GpuContext::mappable`].
    pub fn host_buffer(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        if !self.mappable {
            return Err(Error::Unsupported {
                what: "storage buffers in host memory".into(),
                need: "feature MAPPABLE_PRIMARY_BUFFERS".into(),
                have: "not offered by this adapter".into(),
            });
        }
        let size = size.max(4).next_multiple_of(4);
        if size > self.max_binding() {
            return Err(Error::Unsupported {
                what: format!("a host buffer for {label}"),
                need: format!("{size} bytes"),
                have: format!("max storage binding {}", self.max_binding()),
            });
        }
        self.allocate(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Read `len` bytes at `offset` of a host buffer by mapping it (waits for the GPU).
    pub fn read_host(&self, buf: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (start, end) = (offset / 8 * 8, (offset + len).next_multiple_of(4));
        let bytes = block_on("read_host", self.map_read(buf, start..end))?;
        Ok(bytes[(offset - start) as usize..][..len as usize].to_vec())
    }

    /// Map `range` of a MAP_READ buffer, copy it out, unmap. Natively the poll inside waits for
    /// the GPU, so the future is ready when first awaited; in a browser it resolves when the
    /// page's event loop delivers the map callback.
    async fn map_read(&self, buf: &wgpu::Buffer, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        let mapped = map_async(buf, range.clone());
        self.check()?;
        mapped
            .await
            .map_err(|e| Error::Gpu(format!("map_async failed: {e}")))?;
        let data = take_mapped(buf, range)?;
        self.errors()?;
        Ok(data)
    }

    /// A storage buffer holding `data`.
    pub fn upload<T: Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(label, bytes.len() as u64)?;
        self.write(&buf, 0, bytes);
        Ok(buf)
    }

    /// Write bytes into a buffer at `offset` (padded to a multiple of 4 with zeros).
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(buf, offset, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf, offset, &padded);
        }
    }

    /// Fill a whole buffer with one 32-bit pattern (poison: `f32::NAN.to_bits()`, `u32::MAX`).
    pub fn fill(&self, buf: &wgpu::Buffer, pattern: u32) {
        let words = vec![pattern; (buf.size() / 4) as usize];
        self.queue
            .write_buffer(buf, 0, bytemuck::cast_slice(&words));
    }

    /// A uniform buffer holding one `Params` struct.
    pub fn uniform<T: Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::bytes_of(value));
        buf
    }

    /// Copy a buffer back to the CPU (waits for the GPU). Native only: in a browser nothing may
    /// wait, and this returns an error naming [`GpuContext::read_async`].
    pub fn read<T: Pod>(&self, buf: &wgpu::Buffer) -> Result<Vec<T>> {
        block_on("read", self.read_async(buf))
    }

    /// A readback buffer holding a copy of `buf` (submitted, not waited for).
    fn copy_to_readback(&self, buf: &wgpu::Buffer) -> wgpu::Buffer {
        let staging = self.readback_buffer("readback", buf.size());
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
        self.submit(enc);
        staging
    }

    /// [`GpuContext::read`] without blocking: the one read that works in a browser, where the
    /// map callback runs only once the page's event loop does (`device.poll` cannot wait
    /// there). On native backends it polls, so the future is ready when first awaited.
    pub async fn read_async<T: Pod>(&self, buf: &wgpu::Buffer) -> Result<Vec<T>> {
        let staging = self.copy_to_readback(buf);
        let data = self.map_read(&staging, 0..buf.size()).await?;
        Ok(bytemuck::pod_collect_to_vec(&data))
    }

    /// A compute pipeline from one of our WGSL files with `override` constants; bind layout
    /// derived from the shader. Compiled with the context's [`ShaderChecks`], once per context:
    /// asking again with the same label, source, entry and constants returns the same pipeline.
    pub fn pipeline(
        &self,
        label: &str,
        source: &'static str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key: PipelineKey = (
            label.to_string(),
            source.as_ptr() as usize,
            entry.to_string(),
            constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        );
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let pipeline = self.build_pipeline(label, source, entry, constants)?;
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// How many distinct pipelines this context has compiled.
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    fn build_pipeline(
        &self,
        label: &str,
        source: &'static str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: `source` is one of this crate's shaders (the `&'static str` keeps user WGSL
        // out), which meet what `ShaderChecks::Trusted` lists: bounded loops, in-range
        // array indices, non-zero divisors.
        let module = unsafe {
            self.device
                .create_shader_module_trusted(desc, self.report.shader_checks.runtime_checks())
        };
        self.built.lock().unwrap().push(PipelineSource {
            label: label.into(),
            source,
            entry: entry.into(),
            constants: constants.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.check()
            .map_err(|e| Error::Gpu(format!("building pipeline {label}: {e}")))?;
        Ok(pipeline)
    }

    /// Bind each `(binding, buffer)` pair in group 0 of the pipeline's layout.
    pub fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        buffers: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: *i,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Run `record` in one compute pass, submit, and wait. With `timer`, the pass is timestamped
    /// into mark `mark` of it.
    pub fn run_pass(
        &self,
        timer: Option<(&GpuTimer, u32)>,
        record: impl FnOnce(&mut wgpu::ComputePass),
    ) -> Result<()> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: timer.map(|(t, mark)| t.writes(mark)),
            });
            record(&mut pass);
        }
        self.submit(enc);
        self.check()
    }
}

/// The bytes of `range` of a mapped buffer, copied out, and the buffer unmapped.
pub(crate) fn take_mapped(
    buf: &wgpu::Buffer,
    range: impl std::ops::RangeBounds<u64>,
) -> Result<Vec<u8>> {
    let data = buf
        .get_mapped_range(range)
        .map_err(|e| Error::Gpu(format!("get_mapped_range failed: {e:?}")))?
        .to_vec();
    buf.unmap();
    Ok(data)
}

/// Run one of the crate's futures to its end: natively by blocking (every future here is ready
/// once the device has been polled). In a browser nothing may block (map callbacks arrive
/// through the page's event loop, which cannot run while Rust waits), so there a future that is
/// not ready at once is an error that names `what` and says to use its `_async` form.
pub(crate) fn block_on<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = what;
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(Error::Gpu(format!(
                "{what} waits for the GPU, which a browser page cannot do: use its async form"
            ))),
        }
    }
}

/// Ask for `range` of a MAP_READ buffer to be mapped; the future resolves with the callback.
pub(crate) fn map_async(buf: &wgpu::Buffer, range: std::ops::Range<u64>) -> Mapped {
    let mapped = Mapped::default();
    let done = mapped.clone();
    buf.map_async(wgpu::MapMode::Read, range, move |r| done.finish(r));
    mapped
}

/// A map callback's result as a future ([`map_async`]).
#[derive(Clone, Default)]
pub(crate) struct Mapped(Arc<Mutex<MappedState>>);

#[derive(Default)]
pub(crate) struct MappedState {
    result: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<std::task::Waker>,
}

impl Mapped {
    fn finish(&self, r: std::result::Result<(), wgpu::BufferAsyncError>) {
        let mut s = self.0.lock().unwrap();
        s.result = Some(r);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Natively, whether the callback has run within `limit`: one that never runs is then an
    /// error, not a hang (awaiting it would block for good).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn arrived_within(&self, limit: std::time::Duration) -> bool {
        let t0 = std::time::Instant::now();
        while self.0.lock().unwrap().result.is_none() {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }
}

impl Future for Mapped {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut s = self.0.lock().unwrap();
        match s.result.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

/// A compute pass, timestamped into mark `mark` of the timer when there is one.
pub fn timed_pass<'e>(
    enc: &'e mut wgpu::CommandEncoder,
    timer: Option<(&'e GpuTimer, u32)>,
) -> wgpu::ComputePass<'e> {
    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: timer.map(|(t, mark)| t.writes(mark)),
    })
}

/// GPU timestamps around compute passes: mark i owns queries 2i (begin) and 2i+1 (end). (A
/// "mark" is a timer's unit; a pool's rows are its "slots".)
pub struct GpuTimer {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    marks: u32,
    period_ns: f64,
}

impl GpuTimer {
    /// `None` when the device has no timestamp queries (callers fall back to wall clock).
    pub fn new(ctx: &GpuContext, marks: u32) -> Option<Self> {
        if !ctx.timestamps {
            return None;
        }
        let query_set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * marks,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timer resolve"),
            size: 16 * marks as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(GpuTimer {
            query_set,
            resolve,
            marks,
            period_ns: ctx.queue.get_timestamp_period() as f64,
        })
    }

    pub fn writes(&self, mark: u32) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(2 * mark),
            end_of_pass_write_index: Some(2 * mark + 1),
        }
    }

    /// Timestamp mark `mark` around whatever `record` puts into `enc` (buffer copies included).
    /// Needs `TIMESTAMP_QUERY_INSIDE_ENCODERS` ([`GpuContext::encoder_timestamps`]).
    pub fn around(
        &self,
        enc: &mut wgpu::CommandEncoder,
        mark: u32,
        record: impl FnOnce(&mut wgpu::CommandEncoder),
    ) {
        enc.write_timestamp(&self.query_set, 2 * mark);
        record(enc);
        enc.write_timestamp(&self.query_set, 2 * mark + 1);
    }

    /// Bytes [`GpuTimer::record_copy`] writes: two u64 ticks per mark.
    pub fn bytes(&self) -> u64 {
        16 * self.marks as u64
    }

    /// Record resolving every mark's ticks and copying them into `dest` at `offset`, inside the
    /// caller's command buffer (so they come back with the step's other results).
    pub fn record_copy(&self, enc: &mut wgpu::CommandEncoder, dest: &wgpu::Buffer, offset: u64) {
        enc.resolve_query_set(&self.query_set, 0..2 * self.marks, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, dest, offset, self.bytes());
    }

    /// Seconds of each mark from ticks copied by [`GpuTimer::record_copy`].
    pub fn seconds(&self, ticks: &[u64]) -> Vec<f64> {
        ticks
            .chunks(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * self.period_ns * 1e-9)
            .collect()
    }

    /// Seconds from the earliest begin to the latest end among the written marks of `ticks`
    /// (marks never written read as zero and are skipped).
    pub fn span(&self, ticks: &[u64]) -> f64 {
        let written = ticks.chunks(2).filter(|p| p[0] > 0 && p[1] >= p[0]);
        let first = written.clone().map(|p| p[0]).min();
        let last = written.map(|p| p[1]).max();
        match (first, last) {
            (Some(a), Some(b)) => (b - a) as f64 * self.period_ns * 1e-9,
            _ => 0.0,
        }
    }

    /// Each mark's pass as (begin, end) seconds from the earliest written begin of `ticks`
    /// (`None` for a mark never written).
    pub fn intervals(&self, ticks: &[u64]) -> Vec<Option<(f64, f64)>> {
        let written = |p: &[u64]| p[0] > 0 && p[1] >= p[0];
        let first = ticks.chunks(2).filter(|p| written(p)).map(|p| p[0]).min();
        let secs = |t: u64, t0: u64| (t - t0) as f64 * self.period_ns * 1e-9;
        ticks
            .chunks(2)
            .map(|p| match first {
                Some(t0) if written(p) => Some((secs(p[0], t0), secs(p[1], t0))),
                _ => None,
            })
            .collect()
    }

    /// Seconds each mark's pass took.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.resolve_query_set(&self.query_set, 0..2 * self.marks, &self.resolve, 0);
        ctx.submit(enc);
        let ticks: Vec<u64> = ctx.read(&self.resolve)?;
        Ok(ticks
            .chunks(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * self.period_ns * 1e-9)
            .collect())
    }
}
