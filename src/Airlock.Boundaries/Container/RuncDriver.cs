using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries.Container;

/// <summary>
/// The container boundary: the guest agent as the entry process (under tini, which reaps orphans) of an OCI container
/// that Airlock describes itself (config.json) and an OCI runtime (runc, or crun where the host allows) runs: new
/// pid, ipc, uts, mount, cgroup and user namespaces, the network namespace Airlock made for the sandbox, a small set of
/// capabilities, no_new_privileges, Airlock's allowlist seccomp profile, masked and read-only kernel paths, and the
/// template under a writable layer whose ext4 image is the disk quota.
/// </summary>
/// <remarks>
/// <code>
/// StartAsync: layer.img (disk quota) → idmapped template + overlay → cgroups with limits (fail closed)
///           → bundle/config.json → [setpriv --pdeathsig] runc run [-d] → pid file → agent listening
/// Pause to disk: runc kill → unmount (layer.img kept: files survive, processes do not — no CRIU)
/// Resume: StartAsync on the kept layer.img
/// </code>
/// </remarks>
public sealed class RuncDriver : ISandboxDriver, IPausableDriver
{
    /// <summary>
    /// What root in the container keeps (everything else is dropped): file ownership and permission overrides inside its
    /// own files, switching to the sandbox user, signalling its own processes, and binding low ports in its namespace.
    /// Not here, among others: NET_RAW (raw sockets), MKNOD, SYS_CHROOT, SETFCAP, AUDIT_WRITE, SYS_ADMIN.
    /// </summary>
    public static readonly IReadOnlyList<string> Capabilities =
        ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETUID", "CAP_SETGID", "CAP_NET_BIND_SERVICE"];

    /// <summary>Kernel interfaces hidden from the container (bind-mounted over with nothing).</summary>
    public static readonly IReadOnlyList<string> MaskedPaths =
    [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/proc/sysrq-trigger", "/sys/firmware",
    ];

    /// <summary>Kernel interfaces the container may read but not write.</summary>
    public static readonly IReadOnlyList<string> ReadonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/sys"];

    internal const string AgentPathInside = "/.airlock/bin/airlock-guest";
    private const string InitPathInside = "/.airlock/bin/tini";
    private readonly RuncOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ProbeCache _probe = new();
    private string _runtime = "runc";
    private string? _version;
    private bool _userns = true;
    private (OciSeccomp Profile, string Description)? _seccomp;

    public RuncDriver(RuncOptions options)
    {
        _options = options;
        _cgroups = new CgroupManager(options.CgroupRoot);
    }

    public BoundaryKind Boundary => BoundaryKind.Container;

    public string Name => _runtime;

    /// <summary>Why crun is not used here (null when it is, or when it is not installed).</summary>
    public string? CrunStatus { get; private set; }

    private string SandboxesDir => Path.Combine(_options.DataDir, "sandboxes");

    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) => _probe.GetAsync(ProbeUncachedAsync, cancellationToken);

    private async Task<DriverAvailability> ProbeUncachedAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (NativeMethods.geteuid() != 0)
        {
            missing.Add("root (airlockd runs the OCI runtime, mounts layers and creates cgroups)");
        }

        foreach (var tool in new[] { "nsenter", "setpriv", "unshare", "mkfs.ext4", "mount" })
        {
            if (await HostTools.TryRunAsync(tool, ["--version"], cancellationToken) is null)
            {
                missing.Add($"{tool} (util-linux / e2fsprogs)");
            }
        }

        if (!File.Exists(_options.Init))
        {
            missing.Add($"a static init at {_options.Init} (apt install tini)");
        }

        if (!File.Exists("/dev/loop-control"))
        {
            missing.Add("loop devices (/dev/loop-control; modprobe loop): the disk quota is a loop-mounted ext4 layer");
        }

        if (_cgroups.Probe() is { } cgroupProblem)
        {
            missing.Add(cgroupProblem);
        }

        _seccomp = ContainerSeccomp.Build();
        if (missing.Count > 0)
        {
            return Unavailable(missing);
        }

        // Prove each runtime with the very configuration sandboxes get (user namespace, seccomp, cgroup limits, masked
        // paths) on a throwaway root holding a static busybox; a runtime is offered only if that container runs. Only
        // when no runtime can use a user namespace here is one offered without it, and every report then says so.
        var candidates = _options.Runtime == "auto" ? new[] { "crun", "runc" } : [_options.Runtime];
        var versions = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var runtime in candidates)
        {
            var version = await HostTools.TryRunAsync(runtime, ["--version"], cancellationToken);
            if (version is { ExitCode: 0 })
            {
                versions[runtime] = version.StandardOutput.Split('\n')[0].Replace("runc version ", string.Empty, StringComparison.Ordinal).Replace("crun version ", string.Empty, StringComparison.Ordinal).Trim();
            }
            else if (runtime != "crun" || _options.Runtime == "crun")
            {
                missing.Add($"{runtime} (apt install {runtime})");
            }
        }

        string? usernsProblem = null;
        foreach (var userns in _options.UserNamespace == false ? new[] { false } : [true, false])
        {
            foreach (var runtime in candidates.Where(versions.ContainsKey))
            {
                _userns = userns;
                var problem = await ProbeRuntimeAsync(runtime, cancellationToken);
                if (problem is null)
                {
                    _runtime = runtime;
                    _version = versions[runtime];
                    UserNamespaceProblem = userns ? null : usernsProblem ?? "turned off by configuration";
                    return new DriverAvailability(Boundary, Name, true,
                        $"{runtime} {_version}, cgroup {_cgroups.Mode}, seccomp {_seccomp.Value.Description}, userns {(userns ? "yes" : $"no ({UserNamespaceProblem})")}"
                        + (CrunStatus is null ? "" : $"; {CrunStatus}"));
                }

                if (runtime == "crun" && userns)
                {
                    CrunStatus = $"crun refused here: {problem}";
                }
                else if (userns)
                {
                    usernsProblem ??= problem;
                }
                else
                {
                    missing.Add($"{runtime} cannot run Airlock's container configuration here: {usernsProblem ?? problem}");
                }
            }
        }

        if (missing.Count == 0)
        {
            missing.Add(CrunStatus ?? $"no usable OCI runtime ({_options.Runtime})");
        }

        return Unavailable(missing);
    }

    /// <summary>Why containers run without a user namespace on this host (null: they run with one).</summary>
    public string? UserNamespaceProblem { get; private set; }

    private DriverAvailability Unavailable(List<string> missing) =>
        new(Boundary, Name, false, "the container boundary needs: " + string.Join("; ", missing)) { Missing = missing };

    /// <summary>Runs <c>busybox true</c> in a container configured as sandboxes are; null when it ran.</summary>
    private async Task<string?> ProbeRuntimeAsync(string runtime, CancellationToken cancellationToken)
    {
        var busybox = new[] { "/bin/busybox", "/usr/bin/busybox" }.FirstOrDefault(File.Exists);
        if (busybox is null)
        {
            return "no static busybox to probe with (apt install busybox-static)";
        }

        var id = "probe-" + Guid.NewGuid().ToString("N")[..8];
        var dir = Path.Combine(_options.DataDir, "tmp", id);
        var rootfs = Path.Combine(dir, "rootfs");
        var netns = "airlock-" + id;
        try
        {
            Directory.CreateDirectory(Path.Combine(rootfs, "bin"));
            foreach (var sub in new[] { "proc", "dev", "sys", "tmp", "var/tmp" })
            {
                Directory.CreateDirectory(Path.Combine(rootfs, sub));
            }

            File.Copy(busybox, Path.Combine(rootfs, "bin", "busybox"));
            var idBase = _options.IdBase + (uint)(4096 * _options.IdsPerSandbox); // far from any sandbox's range
            foreach (var path in Directory.EnumerateFileSystemEntries(rootfs, "*", SearchOption.AllDirectories).Prepend(rootfs))
            {
                NativeMethods.lchown(path, idBase, idBase); // the probe's root owns its root, as a sandbox's does
            }

            if (await HostTools.TryRunAsync("ip", ["netns", "add", netns], cancellationToken) is not { ExitCode: 0 } added)
            {
                return "could not create a network namespace to probe with";
            }

            var limits = new SandboxLimits { MemoryMiB = 64, Pids = 16 };
            var cgroupsPath = $"/airlock/{id}";
            var spec = BuildSpec(rootfs, ["/bin/busybox", "true"], [], "probe", $"/run/netns/{netns}", _userns ? idBase : null, limits, cgroupsPath, mountAgent: false);
            var bundle = Path.Combine(dir, "bundle");
            Directory.CreateDirectory(bundle);
            await File.WriteAllBytesAsync(Path.Combine(bundle, "config.json"), JsonSerializer.SerializeToUtf8Bytes(spec, OciJsonContext.Default.OciSpec), cancellationToken);
            WritableLayer.MakeTraversable(dir, _options.DataDir);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(20));
            var run = await HostTools.TryRunAsync(runtime, ["--root", Path.Combine(_options.StateRoot, runtime), "run", "--bundle", bundle, id], timeout.Token);
            return run switch
            {
                null => $"{runtime} is not installed",
                { ExitCode: 0 } => null,
                _ => $"{(run.StandardError + run.StandardOutput).Trim().Split('\n').LastOrDefault()} (exit {run.ExitCode})",
            };
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return "the probe container did not finish within 20 s";
        }
        finally
        {
            await HostTools.TryRunAsync(runtime, ["--root", Path.Combine(_options.StateRoot, runtime), "delete", "--force", id], CancellationToken.None);
            await _cgroups.DestroyAsync(id, CancellationToken.None);
            await HostTools.TryRunAsync("ip", ["netns", "del", netns], CancellationToken.None);
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    public Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken) =>
        StartAsync(launch, resumed: false, cancellationToken);

    private async Task<ISandboxInstance> StartAsync(SandboxLaunch launch, bool resumed, CancellationToken cancellationToken)
    {
        var availability = await ProbeAsync(cancellationToken);
        if (!availability.Available)
        {
            throw new InvalidOperationException(availability.Detail);
        }

        if (!resumed)
        {
            HostTools.ValidatePath(launch.RootFs, "template root filesystem");
        }

        HostTools.ValidatePath(launch.StateDir, "state directory");
        if (!File.Exists(launch.GuestAgentPath))
        {
            throw new InvalidOperationException($"the guest agent '{launch.GuestAgentPath}' does not exist");
        }

        uint? idBase = _userns ? IdBase(launch.Network.Index) : null;
        try
        {
            Directory.CreateDirectory(launch.StateDir);
            var templateRoot = resumed ? await File.ReadAllTextAsync(Path.Combine(launch.StateDir, "template"), cancellationToken) : launch.RootFs;
            await File.WriteAllTextAsync(Path.Combine(launch.StateDir, "template"), templateRoot, cancellationToken);
            await WritableLayer.CreateImageAsync(launch.StateDir, launch.Limits.DiskMiB, cancellationToken);

            var notMapped = await WritableLayer.MountAsync(launch.StateDir, templateRoot, idBase, _options.IdsPerSandbox, cancellationToken);
            if (resumed)
            {
                // The sandbox's id range follows its network slot, which a resume may change: shift what it wrote.
                ShiftOwnership(launch.StateDir, idBase ?? 0);
            }

            await File.WriteAllTextAsync(Path.Combine(launch.StateDir, "idbase"), (idBase ?? 0).ToString(CultureInfo.InvariantCulture), cancellationToken);
            PrepareUpper(WritableLayer.Upper(launch.StateDir), idBase ?? 0);

            var cgroupsPath = $"/airlock/{launch.SandboxId}";
            if (!_cgroups.CanLimitSwap && File.ReadLines("/proc/swaps").Skip(1).Any())
            {
                throw new InvalidOperationException("a limit could not be applied, so the sandbox does not start: swap (the host has swap but its cgroups cannot account it: no memory.memsw.limit_in_bytes / memory.swap.max; boot with swapaccount=1)");
            }

            try
            {
                _cgroups.Create(launch.SandboxId, launch.Limits);
            }
            catch (InvalidOperationException e)
            {
                throw new InvalidOperationException($"a limit could not be applied, so the sandbox does not start: {e.Message}", e);
            }

            var bootToken = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24));
            var env = new List<string>
            {
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "HOME=/root",
                // A boot token, replaced through SetIdentity before anyone reaches the agent: what the container's root
                // can read in /proc/1/environ is worthless by then.
                $"AIRLOCK_ACCESS_TOKEN={bootToken}",
            };
            foreach (var (name, value) in launch.EnvVars)
            {
                if (name.StartsWith("AIRLOCK_", StringComparison.Ordinal) || name.Contains('=', StringComparison.Ordinal) || name.Length == 0)
                {
                    throw new ArgumentException($"environment variable name '{name}' is reserved or invalid");
                }

                env.Add($"{name}={value}");
            }

            // tini: subreaper for orphans (-s), signals to the whole group (-g), and unless the sandbox outlives airlockd,
            // death with the runtime that started it (-p), which itself dies with airlockd.
            string[] args = [InitPathInside, "-s", "-g", .. launch.KeepOnShutdown ? Array.Empty<string>() : ["-p", "SIGKILL"], "--", AgentPathInside, "--listen", $"{launch.Network.SandboxAddress}:{_options.AgentPort}", "--default-user", "user",
                "--command-processes", launch.Limits.CommandProcesses.ToString(CultureInfo.InvariantCulture)];
            var spec = BuildSpec(WritableLayer.Merged(launch.StateDir), args, env, launch.Hostname, $"/run/netns/{launch.Network.Namespace}", idBase, launch.Limits, cgroupsPath, mountAgent: true, launch.GuestAgentPath);
            var bundle = Path.Combine(launch.StateDir, "bundle");
            Directory.CreateDirectory(bundle);
            UnixFiles.SetMode(bundle, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            await File.WriteAllBytesAsync(Path.Combine(bundle, "config.json"), JsonSerializer.SerializeToUtf8Bytes(spec, OciJsonContext.Default.OciSpec), cancellationToken);
            WritableLayer.MakeTraversable(launch.StateDir, _options.DataDir);

            var pidFile = Path.Combine(launch.StateDir, "init.pid");
            File.Delete(pidFile);
            var process = await DedicatedSpawner.StartAsync(LaunchCommand(launch, bundle, pidFile));
            var pid = await WaitForPidAsync(launch, process, pidFile, cancellationToken);

            var report = new BoundaryReport
            {
                Boundary = BoundaryKind.Container.Name(),
                Driver = Name,
                Runtime = $"{_runtime} {_version}",
                Kernel = HostTools.HostKernel(),
                Seccomp = _seccomp!.Value.Description,
                Cgroup = _cgroups.IsV2 ? "v2" : "v1",
                UserNamespace = _userns,
                Limits = launch.Limits,
                Network = $"netns {launch.Network.Namespace}: {launch.Network.SandboxAddress} linked to host {launch.Network.HostAddress}; no route out",
                StartedFrom = resumed
                    ? "restarted on the kept filesystem; processes were stopped at pause (no CRIU on this host)"
                    : notMapped is null ? "template (idmapped: root inside owns its files)" : $"template (not idmapped, so its files are not root's inside: {notMapped})",
            };
            return new RuncInstance(this, launch.SandboxId, launch.StateDir, report, launch.KeepOnShutdown ? null : process, pid, _cgroups) { BootToken = bootToken };
        }
        catch
        {
            // A failed resume keeps its layer (the sandbox stays paused); a failed start leaves nothing.
            await (resumed ? StopAsync(launch.SandboxId, launch.StateDir, CancellationToken.None) : CleanupAsync(launch.SandboxId, launch.StateDir, CancellationToken.None));
            throw;
        }
    }

    public async Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken)
    {
        if (record.HostPid is not { } pid || !NativeMethods.IsAlive(pid) || !CgroupManager.Contains(pid, record.SandboxId) || record.Report is null)
        {
            return null;
        }

        var state = await HostTools.TryRunAsync(_runtime, [.. RuntimeArgs(), "state", record.SandboxId], cancellationToken);
        var status = state is { ExitCode: 0 } ? JsonSerializer.Deserialize(state.StandardOutput, OciJsonContext.Default.OciState)?.Status : null;
        var instance = new RuncInstance(this, record.SandboxId, launch.StateDir, record.Report, null, pid, _cgroups);
        if (status == "paused")
        {
            instance.MarkFrozen();
        }

        return instance;
    }

    public async Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        var actions = new List<string>(await StopAsync(sandboxId, stateDir, cancellationToken));
        if (WritableLayer.RemoveStateDir(stateDir) is { } removed)
        {
            actions.Add(removed);
        }

        return actions;
    }

    /// <summary>Stops the container and detaches its mounts; the state directory (and its layer image) stays.</summary>
    internal async Task<IReadOnlyList<string>> StopAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        var actions = new List<string>();
        var delete = await HostTools.TryRunAsync(_runtime, [.. RuntimeArgs(), "delete", "--force", sandboxId], cancellationToken);
        if (delete is { ExitCode: 0 })
        {
            actions.Add($"{_runtime} deleted container {sandboxId}");
        }

        actions.AddRange(await _cgroups.DestroyAsync(sandboxId, cancellationToken));
        actions.AddRange(WritableLayer.Unmount(stateDir));
        return actions;
    }

    public async Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var list = await HostTools.TryRunAsync(_runtime, [.. RuntimeArgs(), "list", "--quiet"], cancellationToken);
        if (list is { ExitCode: 0 })
        {
            ids.UnionWith(list.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }

        ids.UnionWith(WritableLayer.MountedSandboxIds(SandboxesDir, "layer", "lower"));
        ids.RemoveWhere(id => id.StartsWith("probe-", StringComparison.Ordinal) || id.Contains('/', StringComparison.Ordinal));
        return ids;
    }

    // ---- pause to disk: the filesystem is kept, the processes are not (CRIU does not work on these hosts) ----

    /// <inheritdoc />
    public bool CanKeepMemory => false;

    /// <inheritdoc />
    public bool PausedWithMemory(string stateDir) => false;

    public async Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken)
    {
        var container = (RuncInstance)instance;

        // Freeze first so nothing writes while the layer is synced, then stop everything and detach the layer.
        await container.FreezeAsync(cancellationToken);
        await container.StopForPauseAsync(cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(container.StateDir, "paused"), "processes stopped; filesystem kept", cancellationToken);
    }

    public async Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken) =>
        await StartAsync(launch, resumed: true, cancellationToken);

    public void DiscardPausedState(string stateDir) => File.Delete(Path.Combine(stateDir, "paused"));

    /// <summary>
    /// The layer image and the template it sits on are all a container needs to come back (its processes never do):
    /// so a container lost while frozen (a host reboot) or mid-pause is still resumable from its files.
    /// </summary>
    public bool HasPausedState(string stateDir) =>
        File.Exists(Path.Combine(stateDir, WritableLayer.Image)) && File.Exists(Path.Combine(stateDir, "template"));

    public long PausedBytes(string stateDir) => WritableLayer.AllocatedBytes(stateDir);

    // ---- the bundle ----

    internal string[] RuntimeArgs() => ["--root", Path.Combine(_options.StateRoot, _runtime)];

    internal string RuntimeBinary => _runtime;

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

    /// <summary>Moves the ownership of everything in the upper layer to a new id range (a resume onto another slot).</summary>
    private void ShiftOwnership(string stateDir, uint idBase)
    {
        var saved = Path.Combine(stateDir, "idbase");
        if (!File.Exists(saved) || !uint.TryParse(File.ReadAllText(saved), CultureInfo.InvariantCulture, out var old) || old == idBase)
        {
            return;
        }

        var upper = WritableLayer.Upper(stateDir);
        foreach (var path in Directory.EnumerateFileSystemEntries(upper, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = false }).Prepend(upper))
        {
            if (NativeMethods.Owner(path) is not var (uid, gid))
            {
                continue;
            }

            NativeMethods.lchown(path, Shift(uid, old, idBase), Shift(gid, old, idBase));
        }

        uint Shift(uint id, uint from, uint to) => id >= from && id - from < _options.IdsPerSandbox ? to + (id - from) : id;
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
