//! The cgroup a task's containers share, holding them together to the task-level `cpu` and
//! `memory`, as the ECS agent does with its `/ecs/TASK_ID` cgroup.
//!
//! ecrld makes `ecrl/TASK_ID` in the host's cgroup filesystem, writes the task's limits there,
//! and the engine creates each container of the task beneath it (`CgroupParent`). That needs an
//! engine on this host using the `cgroupfs` cgroup driver (with the `systemd` driver, systemd
//! owns the tree) and a cgroup filesystem ecrld may write; where either is missing, tasks run
//! as before, each container held only to its own limits.
//!
//! - cgroup v1: `MOUNT/ecrl/TASK_ID` in the memory hierarchy (`memory.limit_in_bytes`) and the
//!   cpu hierarchy (`cpu.cfs_quota_us`); the engine makes the same directory in every other
//!   hierarchy, so removal walks them all.
//! - cgroup v2: `ROOT/ecrl/TASK_ID` with `memory.max` and `cpu.max`, the memory and cpu
//!   controllers enabled down to it.
//!
//! Task-level `cpu` is a ceiling, as on ECS: 1024 units are one CPU's time in every scheduling
//! period.

use std::io;
use std::path::{Path, PathBuf};

/// The directory under each hierarchy's root that holds ecrl's task cgroups.
const TOP: &str = "ecrl";
/// The kernel's smallest CFS quota, in microseconds.
const MIN_QUOTA_US: u64 = 1000;
const DEFAULT_PERIOD_US: u64 = 100_000;

/// What the task's containers are held to together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    pub memory_bytes: Option<u64>,
    /// ECS CPU units: 1024 is one CPU.
    pub cpu_units: Option<u64>,
}

impl TaskLimits {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.cpu_units.is_none()
    }
}

/// The host's cgroup filesystem, as far as task cgroups need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    V1 {
        /// Every hierarchy's mount point, the hybrid layout's unified one among them (the
        /// engine makes the task's directory in each).
        mounts: Vec<PathBuf>,
        memory: PathBuf,
        cpu: PathBuf,
    },
    V2 {
        root: PathBuf,
    },
}

impl Hierarchy {
    /// Finds the hierarchy of the given version in a mount table (`/proc/self/mounts`).
    pub fn from_mounts(table: &str, version: u8) -> Result<Hierarchy, String> {
        let mut v1 = Vec::new();
        let mut memory = None;
        let mut cpu = None;
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, dir, fstype, options, ..] = fields[..] else {
                continue;
            };
            let dir = PathBuf::from(unescape_mount_path(dir));
            match fstype {
                "cgroup2" if version == 2 => return Ok(Hierarchy::V2 { root: dir }),
                // The hybrid layout's unified tree: the engine's runtime makes the task's
                // directory there too.
                "cgroup2" => v1.push(dir),
                "cgroup" if version == 1 => {
                    for option in options.split(',') {
                        match option {
                            "memory" => memory = Some(dir.clone()),
                            "cpu" => cpu = Some(dir.clone()),
                            _ => {}
                        }
                    }
                    v1.push(dir);
                }
                _ => {}
            }
        }
        match (version, memory, cpu) {
            (1, Some(memory), Some(cpu)) => Ok(Hierarchy::V1 {
                mounts: v1,
                memory,
                cpu,
            }),
            (1, _, _) => Err("the memory and cpu cgroup hierarchies are not mounted".into()),
            _ => Err(format!("no cgroup v{version} filesystem is mounted")),
        }
    }

    /// What task cgroups will be, for a status: `cgroup v1` or `cgroup v2`, or why ecrld
    /// cannot make them (it may not write the hierarchies).
    pub fn describe(&self) -> Result<String, String> {
        let (version, dirs): (u8, Vec<&Path>) = match self {
            Hierarchy::V1 { memory, cpu, .. } => (1, vec![memory.as_path(), cpu.as_path()]),
            Hierarchy::V2 { root } => (2, vec![root.as_path()]),
        };
        for dir in dirs {
            let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a valid C string; access(2) only reads it.
            if unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0 {
                return Err(format!(
                    "ecrld may not write {}: {}",
                    dir.display(),
                    io::Error::last_os_error()
                ));
            }
        }
        Ok(format!(
            "one cgroup per task ({TOP}/TASK_ID, cgroup v{version})"
        ))
    }

    /// The `CgroupParent` the engine takes for the task's containers.
    pub fn parent(task_id: &str) -> String {
        format!("/{TOP}/{task_id}")
    }

    /// Makes the task's cgroup and writes its limits; a cgroup left by an earlier run of the
    /// same task is reused.
    pub fn create(&self, task_id: &str, limits: &TaskLimits) -> io::Result<()> {
        match self {
            Hierarchy::V1 { memory, cpu, .. } => {
                if let Some(bytes) = limits.memory_bytes {
                    let dir = make_dir(&memory.join(TOP).join(task_id))?;
                    write(&dir, "memory.limit_in_bytes", &bytes.to_string())?;
                }
                if let Some(units) = limits.cpu_units {
                    let dir = make_dir(&cpu.join(TOP).join(task_id))?;
                    let period = read_u64(&dir, "cpu.cfs_period_us").unwrap_or(DEFAULT_PERIOD_US);
                    write(
                        &dir,
                        "cpu.cfs_quota_us",
                        &quota_us(units, period).to_string(),
                    )?;
                }
                Ok(())
            }
            Hierarchy::V2 { root } => {
                let mut controllers = Vec::new();
                if limits.memory_bytes.is_some() {
                    controllers.push("memory");
                }
                if limits.cpu_units.is_some() {
                    controllers.push("cpu");
                }
                let top = make_dir(&root.join(TOP))?;
                enable_controllers(root, &controllers)?;
                enable_controllers(&top, &controllers)?;
                let dir = make_dir(&top.join(task_id))?;
                if let Some(bytes) = limits.memory_bytes {
                    write(&dir, "memory.max", &bytes.to_string())?;
                }
                if let Some(units) = limits.cpu_units {
                    let quota = quota_us(units, DEFAULT_PERIOD_US);
                    write(&dir, "cpu.max", &format!("{quota} {DEFAULT_PERIOD_US}"))?;
                }
                Ok(())
            }
        }
    }

    /// Removes the task's cgroup from every hierarchy once its containers are gone. Missing
    /// directories are fine; one still in use (a container left behind) is an error.
    pub fn remove(&self, task_id: &str) -> io::Result<()> {
        let roots: Vec<&Path> = match self {
            Hierarchy::V1 { mounts, .. } => mounts.iter().map(PathBuf::as_path).collect(),
            Hierarchy::V2 { root } => vec![root.as_path()],
        };
        let mut first_error = None;
        for root in roots {
            let dir = root.join(TOP).join(task_id);
            match remove_cgroup(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error
                        .get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The memory limit written for the task, to check what the kernel holds.
    #[cfg(test)]
    fn memory_limit(&self, task_id: &str) -> Option<u64> {
        match self {
            Hierarchy::V1 { memory, .. } => {
                read_u64(&memory.join(TOP).join(task_id), "memory.limit_in_bytes")
            }
            Hierarchy::V2 { root } => read_u64(&root.join(TOP).join(task_id), "memory.max"),
        }
    }
}

/// Removes a cgroup and the empty ones under it (podman leaves one for its `conmon`
/// monitor). A cgroup directory goes with `rmdir` alone; one with processes in it refuses.
fn remove_cgroup(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The CFS quota for `units` ECS CPU units in a period of `period_us`.
pub fn quota_us(units: u64, period_us: u64) -> u64 {
    (units.saturating_mul(period_us) / 1024).max(MIN_QUOTA_US)
}

fn make_dir(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(dir.to_path_buf()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot make {}: {e}", dir.display()),
        )),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {value} to {}: {e}", path.display()),
        )
    })
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Enables the controllers for the children of `dir` (cgroup v2), those already on left alone.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> io::Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !on.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(dir, "cgroup.subtree_control", &missing.join(" "))
}

/// `/proc/self/mounts` writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &s[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn mount_table_names_the_hierarchies() {
        let h = Hierarchy::from_mounts(V1_MOUNTS, 1).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                mounts: vec![
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    "/sys/fs/cgroup/memory".into(),
                    "/sys/fs/cgroup/pids".into(),
                    "/sys/fs/cgroup/unified".into(),
                ],
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
            }
        );
        assert_eq!(
            Hierarchy::from_mounts(V1_MOUNTS, 2).unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup/unified".into()
            }
        );
        let no_memory = V1_MOUNTS.replace(",memory", ",blkio");
        assert!(Hierarchy::from_mounts(&no_memory, 1)
            .unwrap_err()
            .contains("memory and cpu"));
        assert!(Hierarchy::from_mounts("", 2).unwrap_err().contains("v2"));
        assert_eq!(unescape_mount_path(r"/a\040b\\"), r"/a b\\");
    }

    #[test]
    fn a_status_says_whether_task_cgroups_can_be_made() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let v2 = Hierarchy::V2 { root: root.clone() };
        assert_eq!(
            v2.describe().unwrap(),
            "one cgroup per task (ecrl/TASK_ID, cgroup v2)"
        );
        let missing = Hierarchy::V1 {
            mounts: vec![],
            memory: root.join("nowhere"),
            cpu: root.clone(),
        };
        let why = missing.describe().unwrap_err();
        assert!(
            why.contains("nowhere") && why.contains("may not write"),
            "{why}"
        );
    }

    #[test]
    fn cpu_units_become_a_quota() {
        assert_eq!(quota_us(1024, 100_000), 100_000);
        assert_eq!(quota_us(512, 100_000), 50_000);
        assert_eq!(quota_us(2048, 100_000), 200_000);
        assert_eq!(quota_us(1, 100_000), MIN_QUOTA_US, "the kernel's minimum");
    }

    /// The files as they are written; the kernel's side is the engine tests' (tests/tasks.rs).
    #[test]
    fn v1_limits_are_written_and_every_hierarchy_is_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let (memory, cpu, pids) = (
            tmp.path().join("memory"),
            tmp.path().join("cpu"),
            tmp.path().join("pids"),
        );
        let h = Hierarchy::V1 {
            mounts: vec![memory.clone(), cpu.clone(), pids.clone()],
            memory: memory.clone(),
            cpu: cpu.clone(),
        };
        let limits = TaskLimits {
            memory_bytes: Some(64 << 20),
            cpu_units: Some(256),
        };
        h.create("t1", &limits).unwrap();
        assert_eq!(h.memory_limit("t1"), Some(64 << 20));
        assert_eq!(
            read_u64(&cpu.join("ecrl/t1"), "cpu.cfs_quota_us"),
            Some(25_000)
        );
        // The engine makes the directory in the other hierarchies; podman one for conmon.
        std::fs::create_dir_all(pids.join("ecrl/t1")).unwrap();
        std::fs::create_dir_all(memory.join("ecrl/t1/conmon")).unwrap();
        // A real cgroup directory is removable with its files; here they must go first.
        for dir in [memory.join("ecrl/t1"), cpu.join("ecrl/t1")] {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap();
                if f.file_type().unwrap().is_file() {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
        }
        h.remove("t1").unwrap();
        for root in [&memory, &cpu, &pids] {
            assert!(!root.join("ecrl/t1").exists(), "{}", root.display());
        }
        h.remove("t1").unwrap();
    }

    #[test]
    fn v2_enables_controllers_down_to_the_task() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("cgroup.subtree_control"), "cpu io memory pids").unwrap();
        let h = Hierarchy::V2 { root: root.clone() };
        let limits = TaskLimits {
            memory_bytes: Some(32 << 20),
            cpu_units: Some(2048),
        };
        h.create("t2", &limits).unwrap();
        assert_eq!(h.memory_limit("t2"), Some(32 << 20));
        let cpu_max = std::fs::read_to_string(root.join("ecrl/t2/cpu.max")).unwrap();
        assert_eq!(cpu_max, "200000 100000");
        let top = std::fs::read_to_string(root.join("ecrl/cgroup.subtree_control")).unwrap();
        assert_eq!(top, "+memory +cpu");
        // The root had both on already: left as it was.
        let at_root = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap();
        assert_eq!(at_root, "cpu io memory pids");
    }
}
