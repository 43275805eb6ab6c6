//! What the software devices report: an sm_90 GPU (compute capability 9.0, 132 SMs, like an H100
//! SXM) named so that nobody takes it for hardware, and as many of them as `SOFTGPU_DEVICES`
//! says (2 by default, so that multi-GPU code runs).

use std::sync::OnceLock;

use cudarc::driver::sys::CUdevice_attribute as A;

/// The name every software device reports (`cuDeviceGetName`).
pub const DEVICE_NAME: &str = "softgpu (PTX interpreter)";

/// The CUDA version the driver reports (`cuDriverGetVersion`): 13.0, what cudarc's `cuda-13000`
/// bindings and nvcc 13.0's PTX (ISA 9.0) need.
pub const DRIVER_VERSION: i32 = 13_000;

/// The variable that sets the number of devices.
pub const DEVICES_VAR: &str = "SOFTGPU_DEVICES";

/// Devices when `SOFTGPU_DEVICES` is not set.
pub const DEFAULT_DEVICES: usize = 2;

/// The most devices `SOFTGPU_DEVICES` may ask for.
pub const MAX_DEVICES: usize = 64;

/// Global memory per device: 80 GiB, as an H100 SXM (softgpu's allocations are host memory, so
/// the host runs out long before).
pub const TOTAL_MEMORY: u64 = 80 << 30;

/// Streaming multiprocessors per device.
pub const MULTIPROCESSORS: i32 = 132;

/// Threads per warp.
pub const WARP_SIZE: u32 = 32;

/// Threads per block.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// Block dimensions, x y z.
pub const MAX_BLOCK_DIM: [u32; 3] = [1024, 1024, 64];

/// Grid dimensions, x y z.
pub const MAX_GRID_DIM: [u32; 3] = [i32::MAX as u32, 65_535, 65_535];

/// Shared memory a block may use without opting in (static and dynamic together).
pub const DEFAULT_SHARED_PER_BLOCK: u32 = 48 * 1024;

/// Shared memory a block may use with `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
pub const OPTIN_SHARED_PER_BLOCK: u32 = 227 * 1024;

/// Shared memory per multiprocessor.
pub const SHARED_PER_MULTIPROCESSOR: u32 = 228 * 1024;

/// Shared memory the system reserves per block (counted in occupancy).
pub const RESERVED_SHARED_PER_BLOCK: u32 = 1024;

/// Threads per multiprocessor.
pub const MAX_THREADS_PER_MULTIPROCESSOR: u32 = 2048;

/// Resident blocks per multiprocessor.
pub const MAX_BLOCKS_PER_MULTIPROCESSOR: u32 = 32;

/// The number of devices: `SOFTGPU_DEVICES` (read once), or an error message when it is not a
/// number from 0 to [`MAX_DEVICES`].
pub fn device_count() -> Result<usize, String> {
    static COUNT: OnceLock<Result<usize, String>> = OnceLock::new();
    COUNT
        .get_or_init(|| match std::env::var(DEVICES_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(DEFAULT_DEVICES),
            Err(e) => Err(format!("{DEVICES_VAR}: {e}")),
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= MAX_DEVICES => Ok(n),
                _ => Err(format!("{DEVICES_VAR}={v:?} is not a number of devices from 0 to {MAX_DEVICES}")),
            },
        })
        .clone()
}

/// The value of device attribute `attribute` (a `CUdevice_attribute`) of device `ordinal`, or
/// `None` for an attribute softgpu does not model (the call then reports
/// `CUDA_ERROR_NOT_SUPPORTED` rather than a made-up value).
pub fn attribute(attribute: i32, ordinal: usize) -> Option<i32> {
    let is = |a: A| a as i32 == attribute;
    let table: &[(A, i32)] = &[
        (A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, MAX_THREADS_PER_BLOCK as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, MAX_BLOCK_DIM[0] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, MAX_BLOCK_DIM[1] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, MAX_BLOCK_DIM[2] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, MAX_GRID_DIM[0] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, MAX_GRID_DIM[1] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, MAX_GRID_DIM[2] as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, DEFAULT_SHARED_PER_BLOCK as i32),
        (A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY, 64 * 1024),
        (A::CU_DEVICE_ATTRIBUTE_WARP_SIZE, WARP_SIZE as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_PITCH, i32::MAX),
        (A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, 65_536),
        (A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE, 1_980_000),
        (A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT, 512),
        (A::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP, 1),
        (A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, MULTIPROCESSORS),
        (A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT, 0),
        (A::CU_DEVICE_ATTRIBUTE_INTEGRATED, 0),
        (A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, 0),
        (A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE, 0),
        (A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS, 1),
        (A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED, 0),
        (A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, ordinal as i32 + 1),
        (A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, 0),
        (A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, 0),
        (A::CU_DEVICE_ATTRIBUTE_TCC_DRIVER, 0),
        (A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, 2_619_000),
        (A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, 5120),
        (A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, 50 << 20),
        (A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, MAX_THREADS_PER_MULTIPROCESSOR as i32),
        (A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT, 1),
        (A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, 1),
        (A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 9),
        (A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0),
        (A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED, 1),
        (A::CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED, 1),
        (A::CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED, 1),
        (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, SHARED_PER_MULTIPROCESSOR as i32),
        (A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, 65_536),
        (A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, 0),
        (A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD, 0),
        (A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID, ordinal as i32),
        (A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, 0),
        (A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, 0),
        (A::CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED, 1),
        (A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, 1),
        (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, OPTIN_SHARED_PER_BLOCK as i32),
        (A::CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED, 0),
        (A::CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED, 0),
        (A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR, MAX_BLOCKS_PER_MULTIPROCESSOR as i32),
        (A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, RESERVED_SHARED_PER_BLOCK as i32),
        (A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, 1),
        (A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH, 0),
        (A::CU_DEVICE_ATTRIBUTE_MPS_ENABLED, 0),
    ];
    table.iter().find(|(a, _)| is(*a)).map(|&(_, v)| v)
}

/// The 16 bytes of device `ordinal`'s UUID: `softgpu` and the ordinal, so that it is unique per
/// device and recognisable.
pub fn uuid(ordinal: usize) -> [u8; 16] {
    let mut id = *b"softgpu-\0\0\0\0\0\0\0\0";
    id[8..].copy_from_slice(&(ordinal as u64).to_be_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_looks_like_sm_90() {
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as i32, 0), Some(9));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as i32, 0), Some(0));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT as i32, 1), Some(132));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK as i32, 0), Some(48 * 1024));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as i32, 0), Some(227 * 1024));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED as i32, 0), Some(1));
        assert_eq!(attribute(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH as i32, 0), None);
        assert_eq!(attribute(-1, 0), None);
        assert_ne!(uuid(0), uuid(1));
    }
}
