using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

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
///           → bundle/config.json → [tether: setpriv --pdeathsig] sh → setpriv --pdeathsig → runc run [-d] → pid file
///           → tini -p SIGKILL → agent listening
/// Pause to disk: runc pause → delete --force → unmount (layer.img kept: files survive, processes do not — no CRIU)
/// Resume: StartAsync on the kept layer.img, its files shifted to the new slot's id range
/// </code>
/// </remarks>
public sealed partial class RuncDriver : ISandboxDriver, IPausableDriver
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
    private readonly ILogger _logger;
    private readonly ProbeCache _probe = new();
    private string _runtime = "runc";
    private string? _version;
    private bool _userns = true;
    private (OciSeccomp Profile, string Description)? _seccomp;

    public RuncDriver(RuncOptions options, ILogger<RuncDriver>? logger = null)
    {
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _cgroups = new CgroupManager(options.CgroupRoot, _logger);
    }

    public BoundaryKind Boundary => BoundaryKind.Container;

    public string Name => _runtime;

    /// <summary>Why crun is not used here (null when it is, or when it is not installed).</summary>
    public string? CrunStatus { get; private set; }

    private string SandboxesDir => Path.Combine(_options.DataDir, "sandboxes");

    public Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken) =>
        StartAsync(launch, resumed: false, cancellationToken);

    private async Task<ISandboxInstance> StartAsync(SandboxLaunch launch, bool resumed, CancellationToken cancellationToken)
    {
        var availability = await ProbeAsync(cancellationToken);
        if (!availability.Available)
        {
            throw new InvalidOperationException(availability.Detail);
        }

        HostTools.ValidatePath(launch.StateDir, "state directory");
        if (!File.Exists(launch.GuestAgentPath))
        {
            throw new InvalidOperationException($"the guest agent '{launch.GuestAgentPath}' does not exist");
        }

        uint? idBase = _userns ? IdBase(launch.Network.Index) : null;
        try
        {
            Log.Launching(_logger, Boundary.Name(), launch.SandboxId, resumed ? "resume on the kept layer" : "start");
            Directory.CreateDirectory(launch.StateDir);
            var templateRoot = await FilesOnlyPause.TemplateRootAsync(launch, resumed, cancellationToken);
            await WritableLayer.CreateImageAsync(launch.StateDir, launch.Limits.DiskMiB, cancellationToken);

            var notMapped = await WritableLayer.MountAsync(launch.StateDir, templateRoot, idBase, _options.IdsPerSandbox, cancellationToken);
            Log.Mounted(_logger, launch.StateDir);
            // The sandbox's id range follows its network slot, which a resume may change: shift what it wrote.
            WritableLayer.ShiftOwnership(launch.StateDir, idBase ?? 0, _options.IdsPerSandbox);
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
            var process = await DedicatedSpawner.StartAsync(LaunchCommand(launch, bundle, pidFile), tethered: !launch.KeepOnShutdown);
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
                    ? FilesOnlyPause.ResumedFrom
                    : notMapped is null ? "template (idmapped: root inside owns its files)" : $"template (not idmapped, so its files are not root's inside: {notMapped})",
            };
            Log.Launched(_logger, Boundary.Name(), launch.SandboxId, pid);
            return new RuncInstance(this, launch.SandboxId, launch.StateDir, report, launch.KeepOnShutdown ? null : process, pid, _cgroups, _logger, bootToken);
        }
        catch (Exception e)
        {
            Log.LaunchFailed(_logger, Boundary.Name(), launch.SandboxId, e);
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
        var instance = new RuncInstance(this, record.SandboxId, launch.StateDir, record.Report, null, pid, _cgroups, _logger);
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
        var unmounted = WritableLayer.Unmount(stateDir);
        Log.Unmounted(_logger, stateDir, unmounted.Count);
        actions.AddRange(unmounted);
        // A stop for a sandbox kept paused comes with a stand-in state directory: its own mounts are detached by id too.
        var own = Path.Combine(SandboxesDir, sandboxId);
        if (!string.Equals(Path.GetFullPath(own), Path.GetFullPath(stateDir), StringComparison.Ordinal))
        {
            actions.AddRange(WritableLayer.Unmount(own));
        }

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

    /// <summary>Freezes the container so nothing writes, deletes it and detaches its layer; keeping memory is refused.</summary>
    public Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken) =>
        FilesOnlyPause.PauseAsync(instance, keepMemory, cancellationToken);

    public async Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken) =>
        await StartAsync(launch, resumed: true, cancellationToken);

    public void DiscardPausedState(string stateDir) => FilesOnlyPause.Discard(stateDir);

    /// <inheritdoc cref="FilesOnlyPause.HasPausedState" />
    public bool HasPausedState(string stateDir) => FilesOnlyPause.HasPausedState(stateDir);

    public long PausedBytes(string stateDir) => FilesOnlyPause.PausedBytes(stateDir);

    internal string[] RuntimeArgs() => ["--root", Path.Combine(_options.StateRoot, _runtime)];

    internal string RuntimeBinary => _runtime;
}
