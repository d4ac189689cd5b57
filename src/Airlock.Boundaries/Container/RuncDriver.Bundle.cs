using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Container;

/// <summary>The OCI bundle (config.json) and the runtime's command line for a sandbox.</summary>
public sealed partial class RuncDriver
{
    private uint IdBase(int index) => _options.IdBase + (uint)index * _options.IdsPerSandbox;

    private OciSpec BuildSpec(
        string rootfs, IReadOnlyList<string> args, IReadOnlyList<string> env, string hostname, string netnsPath, uint? idBase,
        SandboxLimits limits, string cgroupsPath, bool mountAgent, string? agentPath = null)
    {
        var memory = (long)limits.MemoryMiB * 1024 * 1024;
        List<OciMount> mounts =
        [
            new("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
            new("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            new("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
            new("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            new("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
            // sysfs cannot be mounted for a network namespace owned by the host's user namespace; the container gets
            // an empty, read-only /sys with only its own cgroups in it.
            new("/sys", "tmpfs", "sysfs", ["nosuid", "noexec", "nodev", "mode=755", "size=64k"]),
            new("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
            new("/tmp", "tmpfs", "tmpfs", ["nosuid", "noexec", "nodev", "mode=1777", $"size={Math.Max(16, limits.MemoryMiB / 4)}m"]),
            new("/var/tmp", "tmpfs", "tmpfs", ["nosuid", "noexec", "nodev", "mode=1777", $"size={Math.Max(16, limits.MemoryMiB / 4)}m"]),
        ];
        if (mountAgent)
        {
            mounts.Add(new(AgentPathInside, "bind", agentPath!, ["bind", "ro", "nosuid", "nodev"]));
            mounts.Add(new(InitPathInside, "bind", _options.Init, ["bind", "ro", "nosuid", "nodev"]));
        }

        return new OciSpec
        {
            Process = new OciProcess
            {
                User = new OciUser(0, 0),
                Args = args,
                Env = env,
                Cwd = "/",
                Capabilities = new OciCapabilities { Bounding = Capabilities, Effective = Capabilities, Permitted = Capabilities },
                Rlimits = [new("RLIMIT_NOFILE", OpenFilesLimit, OpenFilesLimit), new("RLIMIT_CORE", 0, 0)],
                NoNewPrivileges = true,
                OomScoreAdj = 500, // the sandbox, not airlockd, is what the host's OOM killer picks first
            },
            Root = new OciRoot(rootfs, Readonly: false),
            Hostname = hostname,
            Mounts = mounts,
            Linux = new OciLinux
            {
                UidMappings = idBase is { } uidBase ? [new(0, uidBase, _options.IdsPerSandbox)] : null,
                GidMappings = idBase is { } gidBase ? [new(0, gidBase, _options.IdsPerSandbox)] : null,
                Namespaces = idBase is null
                    ? [new("pid"), new("ipc"), new("uts"), new("mount"), new("cgroup"), new("network", netnsPath)]
                    : [new("pid"), new("ipc"), new("uts"), new("mount"), new("cgroup"), new("user"), new("network", netnsPath)],
                CgroupsPath = cgroupsPath,
                Resources = new OciResources
                {
                    Memory = new OciMemory { Limit = memory, Swap = _cgroups.CanLimitSwap ? memory : null },
                    Cpu = new OciCpu((long)limits.CpuMillis * 100, 100000),
                    Pids = new OciPids(limits.Pids),
                },
                Seccomp = _seccomp!.Value.Profile,
                MaskedPaths = MaskedPaths,
                ReadonlyPaths = ReadonlyPaths,
                RootfsPropagation = "private",
            },
        };
    }

    /// <summary>65536 open files, or airlockd's own hard limit if lower (a user namespace cannot raise it).</summary>
    private static ulong OpenFilesLimit { get; } = Math.Min(65536UL, File.ReadLines("/proc/self/limits")
        .Where(l => l.StartsWith("Max open files", StringComparison.Ordinal))
        .Select(l => ulong.TryParse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[4], CultureInfo.InvariantCulture, out var hard) ? hard : 1024UL)
        .DefaultIfEmpty(1024UL).First());

    /// <summary>Mount points for the agent and init, owned by the container's root.</summary>
    private static void PrepareUpper(string upper, uint idBase)
    {
        var bin = Path.Combine(upper, ".airlock", "bin");
        Directory.CreateDirectory(bin);
        foreach (var file in new[] { "airlock-guest", "tini" })
        {
            var path = Path.Combine(bin, file);
            if (!File.Exists(path))
            {
                File.WriteAllBytes(path, []);
            }
        }

        foreach (var path in new[] { Path.Combine(upper, ".airlock"), bin })
        {
            NativeMethods.lchown(path, idBase, idBase);
        }
    }

    private ProcessStartInfo LaunchCommand(SandboxLaunch launch, string bundle, string pidFile)
    {
        // Attached (the default): the runtime stays the container's parent and dies with airlockd (pdeathsig), and
        // tini dies with the runtime, taking the pid namespace with it. Kept on shutdown: detached, re-adopted later.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("""exec "$@" >> "$AIRLOCK_LOG" 2>&1 < /dev/null""");
        start.ArgumentList.Add("airlock-launch");
        start.Environment.Clear();
        start.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        start.Environment["AIRLOCK_LOG"] = Path.Combine(launch.StateDir, "sandbox.log");
        List<string> args = launch.KeepOnShutdown
            ? [_runtime, .. RuntimeArgs(), "run", "--detach", "--bundle", bundle, "--pid-file", pidFile, launch.SandboxId]
            : ["setpriv", "--pdeathsig", "KILL", "--", _runtime, .. RuntimeArgs(), "run", "--bundle", bundle, "--pid-file", pidFile, launch.SandboxId];
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return start;
    }

    private static async Task<int> WaitForPidAsync(SandboxLaunch launch, System.Diagnostics.Process process, string pidFile, CancellationToken cancellationToken)
    {
        for (var i = 0; i < 600; i++)
        {
            if (File.Exists(pidFile) && int.TryParse(await File.ReadAllTextAsync(pidFile, cancellationToken), CultureInfo.InvariantCulture, out var pid) && pid > 0)
            {
                return pid;
            }

            if (process.HasExited && !launch.KeepOnShutdown)
            {
                break;
            }

            await Task.Delay(10, cancellationToken);
        }

        var log = Path.Combine(launch.StateDir, "sandbox.log");
        var tail = File.Exists(log) ? string.Join(" | ", File.ReadLines(log).TakeLast(4)) : "";
        throw new InvalidOperationException($"the OCI runtime did not start the container: {tail}");
    }
}
