using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using CliWrap;
using CliWrap.Buffered;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// The microvm boundary: one QEMU process per sandbox, with its own guest kernel.
/// </summary>
/// <remarks>
/// <code>
/// probe (once):  tools ─ kernel ─ probe boot under KVM (bounded) ─ else TCG ─ machine microvm, else q35
/// start:         initramfs + template ext4 (cached) ─ tap in the sandbox netns ─ cgroup ─ QEMU as an unprivileged uid
///                ─ restore the template's pre-booted snapshot (or boot cold) ─ airlockd sets the guest's identity
/// pause:         stop ─ migrate (device state + memory) to a file ─ quit: no process, no memory held
///   no memory:   guest sync (agent) ─ stop (QEMU drains and flushes the disk) ─ quit: root.qcow2 kept, nothing else
/// resume:        QEMU -incoming ─ stream the file back ─ cont ─ identity (clock, entropy)
///   no memory:   cold boot of the current kernel and initramfs on the kept root.qcow2 ─ identity (boot token)
/// </code>
/// </remarks>
public sealed partial class QemuDriver(QemuOptions options, INetworkManager network, ILogger<QemuDriver>? logger = null) : ISandboxDriver, IPausableDriver
{
    private readonly ILogger _logger = (ILogger?)logger ?? NullLogger.Instance;
    internal const string MemoryFile = "memory.bin";
    internal const string DiskFile = "root.qcow2";
    /// <summary>Bumped when the snapshot layout or its ownership rules change, so caches rebuild.</summary>
    private const string SnapshotVersion = "airlock-snapshot-2";
    private readonly CgroupManager _cgroups = new(options.CgroupRoot, (ILogger?)logger ?? NullLogger.Instance);
    private readonly ProbeCache _probe = new();
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _snapshotLocks = new(StringComparer.Ordinal);
    private string _version = "";
    private string _kernel = "";
    private long _tscKhz;

    public BoundaryKind Boundary => BoundaryKind.MicroVm;

    public string Name => "qemu";

    /// <summary>"kvm" or "tcg", once probed.</summary>
    public string Accelerator { get; private set; } = "tcg";

    /// <summary>Why this accelerator (e.g. why KVM was not used).</summary>
    public string AcceleratorReason { get; private set; } = "not probed yet";

    /// <summary>"microvm" or "q35", once probed.</summary>
    public string Machine { get; private set; } = "microvm";

    private string SandboxesDir => Path.Combine(options.DataDir, "sandboxes");

    public async Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken)
    {
        await EnsureAvailableAsync(cancellationToken);
        var boot = await EnsureBootAsync(launch.GuestAgentPath, cancellationToken);
        var (baseDisk, diskHash) = await RootDiskImage.EnsureAsync(Path.Combine(options.VmDir, "disks"), launch.TemplateId, launch.RootFs, options.DiskSizeMiB, cancellationToken);
        Snapshot? snapshot = null;
        if (options.Snapshots && !launch.ColdBoot)
        {
            snapshot = await EnsureSnapshotAsync(launch, boot, baseDisk, diskHash, cancellationToken);
        }

        var uid = (uint)(options.UidBase + launch.Network.Index);
        try
        {
            PrepareStateDir(launch.StateDir, uid);
            var disk = Path.Combine(launch.StateDir, DiskFile);
            await CreateOverlayAsync(disk, snapshot?.Disk ?? baseDisk, snapshot is null ? "raw" : "qcow2", uid, cancellationToken);
            var tap = await network.AttachGuestAsync(launch.Network, uid, cancellationToken);
            var bootToken = snapshot?.Token ?? NewToken();
            var instance = await LaunchAsync(launch, boot, tap, uid, bootToken, incoming: snapshot?.State, cancellationToken);
            return instance;
        }
        catch
        {
            await CleanupAsync(launch.SandboxId, launch.StateDir, CancellationToken.None);
            throw;
        }
    }

    public async Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken)
    {
        if (record.HostPid is not { } pid || !NativeMethods.IsAlive(pid) || !CgroupManager.Contains(pid, record.SandboxId) || record.Report is null)
        {
            return null;
        }

        var qmp = await QmpClient.ConnectAsync(Path.Combine(RunDir(launch.StateDir), "qmp.sock"), TimeSpan.FromSeconds(5), cancellationToken);
        try
        {
            // airlockd may have died mid-pause (guest stopped, state half written) or mid-resume (still receiving).
            var status = (await qmp.ExecuteAsync("query-status", null, cancellationToken)).GetProperty("status").GetString();
            if (status is "inmigrate" or "prelaunch")
            {
                await qmp.DisposeAsync();
                return null; // never finished restoring: the saved state on disk is the truth
            }

            if (status != "running")
            {
                await qmp.ExecuteAsync("cont", null, cancellationToken);
            }

            foreach (var stale in new[] { MemoryFile, MemoryFile + ".tmp", DiskOnlyMarker, "migrate.sock", "run/incoming.sock" })
            {
                File.Delete(Path.Combine(launch.StateDir, stale));
            }
        }
        catch
        {
            await qmp.DisposeAsync();
            throw;
        }

        return new QemuInstance(record.SandboxId, record.Report, null, pid, qmp, _cgroups, launch.StateDir, bootToken: null, new GuestLink(launch.Network, launch.AccessToken), _logger);
    }

    public async Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        var actions = new List<string>();
        actions.AddRange(await _cgroups.DestroyAsync(sandboxId, cancellationToken));
        if (Directory.Exists(stateDir))
        {
            Directory.Delete(stateDir, recursive: true);
            actions.Add($"removed {stateDir}");
        }

        return actions;
    }

    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken)
    {
        // Cgroups are shared with the other drivers' layout (airlock/<id>); a VMM left running is found there.
        var ids = new HashSet<string>(_cgroups.FindAll(), StringComparer.Ordinal);
        ids.RemoveWhere(id => id.StartsWith("probe-", StringComparison.Ordinal));
        return Task.FromResult<IReadOnlyCollection<string>>(ids);
    }

    private async Task EnsureAvailableAsync(CancellationToken cancellationToken)
    {
        var availability = await ProbeAsync(cancellationToken);
        if (!availability.Available)
        {
            throw new InvalidOperationException(availability.Detail);
        }
    }

    private readonly ConcurrentDictionary<string, GuestBoot> _boots = new(StringComparer.Ordinal);

    /// <summary>The initramfs for this agent; hashed and built once per airlockd and per version of its inputs.</summary>
    private async Task<GuestBoot> EnsureBootAsync(string agent, CancellationToken cancellationToken)
    {
        var key = string.Join('|', new[] { agent, _kernel, options.Busybox, options.Tini }.Select(f => $"{f}:{new FileInfo(f).Length}:{File.GetLastWriteTimeUtc(f).Ticks}"));
        if (_boots.TryGetValue(key, out var known) && File.Exists(known.Initramfs))
        {
            return known;
        }

        var boot = await GuestBootImage.EnsureAsync(options.VmDir, _kernel, options.Busybox, options.Tini, agent, cancellationToken);
        _boots[key] = boot;
        return boot;
    }

    private async Task CreateOverlayAsync(string path, string backing, string backingFormat, uint uid, CancellationToken cancellationToken)
    {
        var result = await Cli.Wrap(options.QemuImg)
            .WithArguments(["create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path])
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cancellationToken);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"qemu-img create {path} failed: {result.StandardError.Trim()}");
        }

        NativeMethods.lchown(path, uid, uid);
    }

    /// <summary>
    /// The state directory is root's (0711): the sandbox's uid can reach its disk and its <c>run/</c> directory but cannot
    /// create, replace or symlink anything airlockd later opens as root (the QEMU log, vm.conf, memory.bin). QEMU's own
    /// sockets and pid file go to <c>run/</c>, which that uid owns.
    /// </summary>
    private void PrepareStateDir(string stateDir, uint uid)
    {
        Directory.CreateDirectory(stateDir);
        NativeMethods.lchown(stateDir, 0, 0);
        UnixFiles.SetMode(stateDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute);
        var run = RunDir(stateDir);
        if (Directory.Exists(run))
        {
            Directory.Delete(run, recursive: true);
        }

        Directory.CreateDirectory(run);
        NativeMethods.lchown(run, uid, uid);
        UnixFiles.SetMode(run, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // QEMU, as the sandbox uid, must traverse the data directory to its state and to the cached images.
        Layers.WritableLayer.MakeTraversable(Path.GetDirectoryName(stateDir)!, options.DataDir);
    }

    /// <summary>Where QEMU (as the sandbox uid) creates its QMP socket, pid file and incoming-migration socket.</summary>
    internal static string RunDir(string stateDir) => Path.Combine(stateDir, "run");

    /// <summary>A value inside a QEMU option string: commas are doubled so a path cannot add options.</summary>
    private static string Opt(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    private static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));

    private static int? KvmGroup()
    {
        foreach (var line in File.Exists("/etc/group") ? File.ReadLines("/etc/group") : [])
        {
            var parts = line.Split(':');
            if (parts.Length > 2 && parts[0] == "kvm" && int.TryParse(parts[2], CultureInfo.InvariantCulture, out var gid))
            {
                return gid;
            }
        }

        return null;
    }

    /// <summary>The host's TSC rate in kHz (from /proc/cpuinfo), handed to TCG guests so they skip calibration; 0 if unknown.</summary>
    private static long HostTscKhz()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("cpu MHz", StringComparison.Ordinal));
            return line is not null && double.TryParse(line[(line.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture, out var mhz) ? (long)(mhz * 1000) : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    internal static string Tail(string text) => string.Join(" | ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).TakeLast(4));
}
