using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Boundaries.Seccomp;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Boundaries.Process;

/// <summary>
/// The process boundary: the guest agent under bubblewrap, in a user, pid, ipc, uts and mount namespace of its own,
/// inside Airlock's network namespace for the sandbox, as an unprivileged host uid, with all capabilities dropped, our
/// seccomp filter, cgroup limits, and a read-only template under a per-sandbox overlay.
/// </summary>
/// <remarks>
/// <code>
/// StartAsync: layer.img (disk quota) → overlay on the template → cgroups with limits → [tether: setpriv --pdeathsig]
///           → sh (joins the cgroups) → nsenter (sandbox netns) → setpriv (sandbox uid, no caps, pdeathsig again)
///           → bwrap (--die-with-parent) → agent
/// Pause to disk: freeze → kill through the cgroup → unmount (layer.img kept: files survive, processes do not)
/// Resume: StartAsync on the kept layer.img, its files moved to the new slot's uid
/// </code>
/// </remarks>
public sealed class BubblewrapDriver(BubblewrapOptions options, ILogger<BubblewrapDriver>? logger = null) : ISandboxDriver, IPausableDriver
{
    internal const string AgentPathInside = "/.airlock/bin/airlock-guest";
    private const string SandboxUser = "user";
    private const int SandboxUid = 1000;
    private readonly ILogger _logger = (ILogger?)logger ?? NullLogger.Instance;
    private readonly CgroupManager _cgroups = new(options.CgroupRoot, (ILogger?)logger ?? NullLogger.Instance);
    private readonly ProbeCache _probe = new();
    private string? _version;
    private (byte[] Bpf, string Description)? _seccomp;

    public BoundaryKind Boundary => BoundaryKind.Process;

    public string Name => "bubblewrap";

    private string SandboxesDir => Path.Combine(options.DataDir, "sandboxes");

    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) => _probe.GetAsync(ProbeUncachedAsync, cancellationToken);

    private async Task<DriverAvailability> ProbeUncachedAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (NativeMethods.geteuid() != 0)
        {
            missing.Add("root (airlockd mounts overlays, creates cgroups and enters network namespaces)");
        }

        var version = await HostTools.TryRunAsync(options.Bwrap, ["--version"], cancellationToken);
        _version = version is { ExitCode: 0 } ? version.StandardOutput.Trim().Replace("bubblewrap ", string.Empty, StringComparison.Ordinal) : null;
        if (_version is null)
        {
            missing.Add("bubblewrap (apt install bubblewrap)");
        }

        foreach (var tool in new[] { "nsenter", "setpriv" })
        {
            if (await HostTools.TryRunAsync(tool, ["--version"], cancellationToken) is not { ExitCode: 0 })
            {
                missing.Add($"{tool} (util-linux)");
            }
        }

        if (!File.ReadAllText("/proc/filesystems").Contains("\toverlay", StringComparison.Ordinal)
            && await HostTools.TryRunAsync("modprobe", ["overlay"], cancellationToken) is not { ExitCode: 0 })
        {
            missing.Add("overlayfs (kernel module 'overlay')");
        }

        try
        {
            _seccomp = SeccompProfile.Compile(Path.Combine(options.DataDir, "tmp"));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or InvalidOperationException)
        {
            missing.Add($"libseccomp2 ({e.Message})");
        }

        if (_cgroups.Probe() is { } cgroupProblem)
        {
            missing.Add(cgroupProblem);
        }

        if (missing.Count == 0 && _version is not null)
        {
            // Unprivileged user namespaces are what bwrap builds everything on; prove them as a sandbox uid would.
            var probe = await HostTools.TryRunAsync(
                "setpriv",
                [$"--reuid={options.UidBase}", $"--regid={options.UidBase}", "--clear-groups", "--",
                    options.Bwrap, "--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
                cancellationToken);
            if (probe is not { ExitCode: 0 })
            {
                missing.Add($"unprivileged user namespaces (bwrap --unshare-user as uid {options.UidBase} failed: {probe?.StandardError.Trim()}; check kernel.unprivileged_userns_clone and user.max_user_namespaces)");
            }
        }

        return missing.Count == 0
            ? new DriverAvailability(Boundary, Name, true, $"bubblewrap {_version}, cgroup {_cgroups.Mode}, seccomp {_seccomp?.Description}")
            : new DriverAvailability(Boundary, Name, false, "the process boundary needs: " + string.Join("; ", missing)) { Missing = missing };
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

        HostTools.ValidatePath(launch.StateDir, "state directory");
        if (!File.Exists(launch.GuestAgentPath))
        {
            throw new InvalidOperationException($"the guest agent '{launch.GuestAgentPath}' does not exist");
        }

        var hostId = (uint)(options.UidBase + launch.Network.Index);
        var merged = WritableLayer.Merged(launch.StateDir);
        try
        {
            Log.Launching(_logger, Boundary.Name(), launch.SandboxId, resumed ? "resume on the kept layer" : "start");
            await PrepareRootAsync(launch, resumed, options.DataDir, hostId, cancellationToken);
            Log.Mounted(_logger, launch.StateDir);
            var procs = _cgroups.Create(launch.SandboxId, launch.Limits);
            var seccompPath = Path.Combine(launch.StateDir, "seccomp.bpf");
            await File.WriteAllBytesAsync(seccompPath, _seccomp!.Value.Bpf, cancellationToken);

            var start = LaunchCommand(launch, hostId, merged, procs, seccompPath);
            var process = await DedicatedSpawner.StartAsync(start, tethered: !launch.KeepOnShutdown);
            var report = new BoundaryReport
            {
                Boundary = BoundaryKind.Process.Name(),
                Driver = Name,
                Runtime = $"bubblewrap {_version}",
                Kernel = HostTools.HostKernel(),
                Seccomp = _seccomp.Value.Description,
                Cgroup = _cgroups.Mode,
                UserNamespace = true,
                Limits = launch.Limits,
                Network = $"netns {launch.Network.Namespace}: {launch.Network.SandboxAddress} linked to host {launch.Network.HostAddress}; no route out",
                StartedFrom = resumed ? FilesOnlyPause.ResumedFrom : null,
            };
            Log.Launched(_logger, Boundary.Name(), launch.SandboxId, process.Id);
            return new BubblewrapInstance(launch.SandboxId, report, process, process.Id, _cgroups, launch.StateDir, _logger);
        }
        catch (Exception e)
        {
            // A failed resume keeps its layer (the sandbox stays paused); a failed start leaves nothing.
            Log.LaunchFailed(_logger, Boundary.Name(), launch.SandboxId, e);
            await (resumed ? StopAsync(launch.SandboxId, launch.StateDir, CancellationToken.None) : CleanupAsync(launch.SandboxId, launch.StateDir, CancellationToken.None));
            throw;
        }
    }

    public Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken)
    {
        if (record.HostPid is not { } pid || !NativeMethods.IsAlive(pid) || !CgroupManager.Contains(pid, record.SandboxId) || record.Report is null)
        {
            return Task.FromResult<ISandboxInstance?>(null);
        }

        return Task.FromResult<ISandboxInstance?>(new BubblewrapInstance(record.SandboxId, record.Report, null, pid, _cgroups, launch.StateDir, _logger));
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

    private async Task<IReadOnlyList<string>> StopAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        var actions = new List<string>(await StopAsync(_cgroups, _logger, sandboxId, stateDir, cancellationToken));
        // The reconciler stops a sandbox it keeps paused with a stand-in state directory (nothing of its saved state may
        // go): its mounts are found by id (FindLeftoversAsync), so they are detached by id too.
        var own = Path.Combine(SandboxesDir, sandboxId);
        if (!string.Equals(Path.GetFullPath(own), Path.GetFullPath(stateDir), StringComparison.Ordinal))
        {
            actions.AddRange(WritableLayer.Unmount(own));
        }

        return actions;
    }

    /// <summary>Kills what runs in the sandbox's cgroups and detaches its mounts; the state directory (and layer image) stays.</summary>
    internal static async Task<IReadOnlyList<string>> StopAsync(CgroupManager cgroups, ILogger logger, string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        var actions = new List<string>(await cgroups.DestroyAsync(sandboxId, cancellationToken));
        var unmounted = WritableLayer.Unmount(stateDir);
        Log.Unmounted(logger, stateDir, unmounted.Count);
        actions.AddRange(unmounted);
        return actions;
    }

    // ---- pause to disk: the files are kept, the processes are not ----

    /// <inheritdoc />
    public bool CanKeepMemory => false;

    /// <inheritdoc />
    public bool PausedWithMemory(string stateDir) => false;

    /// <summary>Freezes the sandbox's cgroup so nothing writes, kills it, detaches its layer; keeping memory is refused.</summary>
    public Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken) =>
        FilesOnlyPause.PauseAsync(instance, keepMemory, cancellationToken);

    /// <summary>A new bwrap on the kept layer, in the new network (processes start afresh).</summary>
    public async Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken) =>
        await StartAsync(launch, resumed: true, cancellationToken);

    public void DiscardPausedState(string stateDir) => FilesOnlyPause.Discard(stateDir);

    /// <inheritdoc cref="FilesOnlyPause.HasPausedState" />
    public bool HasPausedState(string stateDir) => FilesOnlyPause.HasPausedState(stateDir);

    public long PausedBytes(string stateDir) => FilesOnlyPause.PausedBytes(stateDir);

    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken)
    {
        var ids = new HashSet<string>(_cgroups.FindAll(), StringComparer.Ordinal);
        ids.UnionWith(WritableLayer.MountedSandboxIds(SandboxesDir, "merged", "layer"));
        ids.RemoveWhere(id => id.StartsWith("probe-", StringComparison.Ordinal) || id.Contains('/', StringComparison.Ordinal));
        return Task.FromResult<IReadOnlyCollection<string>>(ids);
    }

    /// <summary>
    /// Mounts the root: the template read-only below, the sandbox's writable layer above, in an ext4 image of the
    /// sandbox's disk size (its quota). What the unprivileged sandbox needs to own (its home, the agent's mount point) is
    /// made in the upper layer first.
    /// </summary>
    private static async Task PrepareRootAsync(SandboxLaunch launch, bool resumed, string dataDirectory, uint hostId, CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("the process boundary needs Linux");
        }

        Directory.CreateDirectory(launch.StateDir);
        WritableLayer.MakeTraversable(launch.StateDir, dataDirectory);
        var templateRoot = await FilesOnlyPause.TemplateRootAsync(launch, resumed, cancellationToken);

        await WritableLayer.CreateImageAsync(launch.StateDir, launch.Limits.DiskMiB, cancellationToken);
        var layer = WritableLayer.LayerDir(launch.StateDir);
        Directory.CreateDirectory(layer);
        await WritableLayer.MountLayerAsync(launch.StateDir, cancellationToken);
        File.SetUnixFileMode(layer, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute);
        var upper = WritableLayer.Upper(launch.StateDir);
        Directory.CreateDirectory(upper);
        File.SetUnixFileMode(upper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        // The sandbox's uid follows its network slot, which a resume may change: what it wrote moves with it.
        WritableLayer.ShiftOwnership(launch.StateDir, hostId, 1);
        var home = Path.Combine(upper, "home", SandboxUser);
        Directory.CreateDirectory(home);
        File.SetUnixFileMode(home, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        Chown(home, hostId);
        Directory.CreateDirectory(Path.Combine(upper, ".airlock", "bin"));
        await File.WriteAllBytesAsync(Path.Combine(upper, ".airlock", "bin", "airlock-guest"), [], cancellationToken);
        await WritableLayer.MountAsync(launch.StateDir, templateRoot, idBase: null, 0, cancellationToken);
    }

    private ProcessStartInfo LaunchCommand(SandboxLaunch launch, uint hostId, string merged, IReadOnlyList<string> cgroupProcs, string seccompPath)
    {
        // Tethered to airlockd first (DedicatedSpawner), a root shell joins the cgroups with its own pid before anything
        // runs (no window outside the limits), then execs: nsenter joins the sandbox's network namespace, setpriv drops to the sandbox's host uid with no
        // capabilities, and bwrap builds the rest. The shell opens the filter as fd 9 for bwrap's --seccomp.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("""
            for procs in $AIRLOCK_CGROUP_PROCS; do echo $$ > "$procs" || exit 97; done
            exec "$@" 9< "$AIRLOCK_SECCOMP" >> "$AIRLOCK_LOG" 2>&1 < /dev/null
            """);
        start.ArgumentList.Add("airlock-launch");
        start.Environment.Clear();
        start.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        start.Environment["AIRLOCK_CGROUP_PROCS"] = string.Join(' ', cgroupProcs);
        start.Environment["AIRLOCK_SECCOMP"] = seccompPath;
        start.Environment["AIRLOCK_LOG"] = Path.Combine(launch.StateDir, "sandbox.log");

        var id = hostId.ToString(CultureInfo.InvariantCulture);
        var uid = SandboxUid.ToString(CultureInfo.InvariantCulture);
        List<string> args =
        [
            "nsenter", $"--net=/run/netns/{launch.Network.Namespace}", "--",
            "setpriv", $"--reuid={id}", $"--regid={id}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            // The uid change clears the parent-death signal the tether set: setpriv sets it again after the change.
            .. launch.KeepOnShutdown ? Array.Empty<string>() : ["--pdeathsig=KILL"],
            "--",
            options.Bwrap,
            "--unshare-user", "--uid", uid, "--gid", uid,
            "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", launch.Hostname,
            "--new-session",
        ];
        if (!launch.KeepOnShutdown)
        {
            args.Add("--die-with-parent");
        }

        args.AddRange(
        [
            "--cap-drop", "ALL",
            "--bind", merged, "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--ro-bind", launch.GuestAgentPath, AgentPathInside,
            "--chdir", $"/home/{SandboxUser}",
            "--clearenv",
            "--setenv", "HOME", $"/home/{SandboxUser}",
            "--setenv", "USER", SandboxUser,
            "--setenv", "LOGNAME", SandboxUser,
            "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "AIRLOCK_ACCESS_TOKEN", launch.AccessToken,
        ]);
        foreach (var (name, value) in launch.EnvVars)
        {
            if (name.StartsWith("AIRLOCK_", StringComparison.Ordinal) || name.Contains('=', StringComparison.Ordinal))
            {
                throw new ArgumentException($"environment variable name '{name}' is reserved or invalid");
            }

            args.AddRange(["--setenv", name, value]);
        }

        args.AddRange(["--seccomp", "9", AgentPathInside, "--listen", $"{launch.Network.SandboxAddress}:{options.AgentPort}",
            "--command-processes", launch.Limits.CommandProcesses.ToString(CultureInfo.InvariantCulture)]);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return start;
    }

    private static void Chown(string path, uint id)
    {
        if (NativeMethods.lchown(path, id, id) != 0)
        {
            throw new InvalidOperationException($"chown {path} to {id} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
    }

    /// <summary>Mount points of this mount namespace, from /proc/self/mountinfo.</summary>
    public static IEnumerable<string> MountPoints() => HostTools.MountPoints();
}
