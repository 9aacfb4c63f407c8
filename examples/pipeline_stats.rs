//! What the Vulkan driver made of each shader: registers per thread, workgroup memory, spills,
//! as the driver reports them through `VK_KHR_pipeline_executable_properties`.
//!
//! A kernel's speed often hangs on numbers WGSL does not show: how many registers the driver's
//! compiler gave each thread (which caps how many workgroups share an SM) and whether anything
//! spilled to local memory. This example builds the kernels of a preset through wgpu, so the WGSL
//! and the `override` constants are exactly the benchmark's, then compiles each pipeline again
//! through Vulkan directly (ash), asking the driver to capture its statistics, and prints them.
//! The SPIR-V is produced by naga with the options wgpu uses for the context's shader checks.
//!
//!     WGPU_BACKEND=vulkan cargo run --release --example pipeline_stats -- [tiny|small|v32]
//!
//! Not every driver offers the extension; without it the example says so and exits. NVIDIA's
//! (580) reports the register count, binary size and shared memory, and no internal
//! representation (no assembly listing); its "Local Memory Size" reads 2^36 for every shader,
//! so it is not a spill indicator there.

use ash::vk;
use ess_wgpu::gpu::{GpuContext, PipelineSource, ShaderChecks};
use ess_wgpu::kernels::{Indexer, LseMerge, SparseMla, TopK};
use ess_wgpu::{Error, Result, RunConfig};
use std::ffi::CStr;

fn main() -> Result<()> {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "v32".into());
    let cfg = RunConfig::preset(&preset)?;
    let ctx = GpuContext::new()?;
    println!("{}\n{cfg}\n", ctx.report);
    // The pipelines of one decode step's kernels (the probe kernels are the benchmark's own).
    Indexer::new(&ctx, &cfg.indexer_shape())?;
    TopK::new(&ctx, &cfg.topk_shape())?;
    SparseMla::new(&ctx, &cfg.sparse_mla_shape())?;
    LseMerge::new(&ctx)?;
    ess_wgpu::kernels::Probe::new(&ctx)?;
    let sources = ctx.pipelines_built();

    // SAFETY: plain Vulkan calls on objects this function creates and destroys; each call's
    // inputs are built right before it.
    unsafe { report(&ctx, &sources) }
}

unsafe fn report(ctx: &GpuContext, sources: &[PipelineSource]) -> Result<()> {
    let vk_err = |what: &str, e: vk::Result| Error::Gpu(format!("{what}: {e}"));
    let entry = unsafe { ash::Entry::load() }.map_err(|e| {
        Error::Gpu(format!(
            "cannot load the Vulkan loader ({e}); install libvulkan1"
        ))
    })?;
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_2);
    let instance = unsafe {
        entry.create_instance(
            &vk::InstanceCreateInfo::default().application_info(&app),
            None,
        )
    }
    .map_err(|e| vk_err("vkCreateInstance", e))?;

    // The physical device wgpu chose, by name.
    let physical = unsafe { instance.enumerate_physical_devices() }
        .map_err(|e| vk_err("vkEnumeratePhysicalDevices", e))?
        .into_iter()
        .find(|&pd| {
            let props = unsafe { instance.get_physical_device_properties(pd) };
            props
                .device_name_as_c_str()
                .ok()
                .and_then(|n| n.to_str().ok())
                == Some(ctx.report.name.as_str())
        })
        .ok_or_else(|| {
            Error::Gpu(format!(
                "no Vulkan device named {:?} (run with WGPU_BACKEND=vulkan)",
                ctx.report.name
            ))
        })?;
    let ext = ash::khr::pipeline_executable_properties::NAME;
    let has_ext = unsafe { instance.enumerate_device_extension_properties(physical) }
        .map_err(|e| vk_err("vkEnumerateDeviceExtensionProperties", e))?
        .iter()
        .any(|p| p.extension_name_as_c_str() == Ok(ext));
    if !has_ext {
        println!(
            "{} does not offer {}: no statistics to show.",
            ctx.report.name,
            ext.to_string_lossy()
        );
        unsafe { instance.destroy_instance(None) };
        return Ok(());
    }

    let family = unsafe { instance.get_physical_device_queue_family_properties(physical) }
        .iter()
        .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
        .ok_or_else(|| Error::Gpu("no compute queue family".into()))? as u32;
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let extensions = [ext.as_ptr()];
    let mut feature = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
        .pipeline_executable_info(true);
    let device_info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&extensions)
        .push_next(&mut feature);
    let device = unsafe { instance.create_device(physical, &device_info, None) }
        .map_err(|e| vk_err("vkCreateDevice", e))?;
    let stats_api = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);

    println!(
        "Driver statistics per pipeline ({}):",
        match ctx.report.shader_checks {
            ShaderChecks::Trusted => "wgpu's runtime checks off, as the kernels run",
            ShaderChecks::Checked => "wgpu's runtime checks on",
        }
    );
    for src in sources {
        let (spirv, bindings) = spirv_for(src, ctx.report.shader_checks)?;
        let module = unsafe {
            device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&spirv), None)
        }
        .map_err(|e| vk_err("vkCreateShaderModule", e))?;
        let layout_bindings: Vec<_> = bindings
            .iter()
            .map(|&(binding, uniform)| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(binding)
                    .descriptor_type(if uniform {
                        vk::DescriptorType::UNIFORM_BUFFER
                    } else {
                        vk::DescriptorType::STORAGE_BUFFER
                    })
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_layout = unsafe {
            device.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&layout_bindings),
                None,
            )
        }
        .map_err(|e| vk_err("vkCreateDescriptorSetLayout", e))?;
        let set_layouts = [set_layout];
        let layout = unsafe {
            device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
                None,
            )
        }
        .map_err(|e| vk_err("vkCreatePipelineLayout", e))?;
        let name = std::ffi::CString::new(src.entry.as_str()).unwrap();
        let info = vk::ComputePipelineCreateInfo::default()
            .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)
            .stage(
                vk::PipelineShaderStageCreateInfo::default()
                    .stage(vk::ShaderStageFlags::COMPUTE)
                    .module(module)
                    .name(&name),
            )
            .layout(layout);
        let pipeline =
            unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) }
                .map_err(|(_, e)| vk_err("vkCreateComputePipelines", e))?[0];

        let executables = unsafe {
            stats_api.get_pipeline_executable_properties(
                &vk::PipelineInfoKHR::default().pipeline(pipeline),
            )
        }
        .map_err(|e| vk_err("vkGetPipelineExecutablePropertiesKHR", e))?;
        for index in 0..executables.len() as u32 {
            let stats = unsafe {
                stats_api.get_pipeline_executable_statistics(
                    &vk::PipelineExecutableInfoKHR::default()
                        .pipeline(pipeline)
                        .executable_index(index),
                )
            }
            .map_err(|e| vk_err("vkGetPipelineExecutableStatisticsKHR", e))?;
            let line: Vec<String> = stats.iter().map(format_statistic).collect();
            println!("{:<22} {}", src.label, line.join(", "));
        }
        unsafe {
            device.destroy_pipeline(pipeline, None);
            device.destroy_pipeline_layout(layout, None);
            device.destroy_descriptor_set_layout(set_layout, None);
            device.destroy_shader_module(module, None);
        }
    }
    unsafe {
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
    Ok(())
}

/// "name value" of one statistic.
fn format_statistic(s: &vk::PipelineExecutableStatisticKHR) -> String {
    let name = unsafe { CStr::from_ptr(s.name.as_ptr()) }.to_string_lossy();
    // SAFETY: `format` says which member of the union the driver wrote.
    let value = unsafe {
        match s.format {
            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 != 0).to_string(),
            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => format!("{:.3}", s.value.f64),
            _ => "?".into(),
        }
    };
    format!("{name} {value}")
}

/// SPIR-V for one entry point with its override constants, written by naga the way wgpu's
/// Vulkan backend writes it for `checks`, and the (binding, is-uniform) pairs of group 0 the
/// entry point uses.
/// Group 0's bindings an entry point uses: (binding, is a uniform buffer).
type Bindings = Vec<(u32, bool)>;

fn spirv_for(src: &PipelineSource, checks: ShaderChecks) -> Result<(Vec<u32>, Bindings)> {
    let fail =
        |what: &str, e: &dyn std::fmt::Debug| Error::Gpu(format!("{}: {what}: {e:?}", src.label));
    let module = naga::front::wgsl::parse_str(src.source).map_err(|e| fail("parse", &e))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| fail("validate", &e))?;
    let constants: naga::back::PipelineConstants = src.constants.iter().cloned().collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, &src.entry)),
        &constants,
    )
    .map_err(|e| fail("overrides", &e))?;

    let ep = module
        .entry_points
        .iter()
        .position(|e| e.name == src.entry)
        .ok_or_else(|| fail("entry point", &src.entry))?;
    let uses = info.get_entry_point(ep);
    let mut bindings: Vec<(u32, bool)> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !uses[*h].is_empty())
        .filter_map(|(_, g)| {
            let b = g.binding.as_ref()?;
            Some((b.binding, g.space == naga::AddressSpace::Uniform))
        })
        .collect();
    bindings.sort();

    // wgpu's Vulkan backend: index clamping (Restrict) and loop bounding unless trusted; buffer
    // accesses left to the driver's robust buffer access.
    let mut options = naga::back::spv::Options {
        zero_initialize_workgroup_memory: naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: checks == ShaderChecks::Checked,
        ..Default::default()
    };
    if checks == ShaderChecks::Checked {
        options.bounds_check_policies.index = naga::proc::BoundsCheckPolicy::Restrict;
    }
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: src.entry.clone(),
    };
    let spirv = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| fail("SPIR-V", &e))?;
    Ok((spirv, bindings))
}
