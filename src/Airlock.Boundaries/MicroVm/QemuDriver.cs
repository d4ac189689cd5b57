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
/// resume:        QEMU -incoming ─ stream the file back ─ cont ─ identity (clock, entropy)
/// </code>
/// </remarks>
public sealed class QemuDriver(QemuOptions options, INetworkManager network) : ISandboxDriver, IPausableDriver
{
    internal const string MemoryFile = "memory.bin";
    internal const string DiskFile = "root.qcow2";
    /// <summary>Bumped when the snapshot layout or its ownership rules change, so caches rebuild.</summary>
    private const string SnapshotVersion = "airlock-snapshot-2";
    private readonly CgroupManager _cgroups = new(options.CgroupRoot);
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

    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) => _probe.GetAsync(ProbeUncachedAsync, cancellationToken);

    private async Task<DriverAvailability> ProbeUncachedAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (NativeMethods.geteuid() != 0)
        {
            missing.Add("root (airlockd creates tap devices, cgroups and enters network namespaces)");
        }

        var version = await HostTools.TryRunAsync(options.Qemu, ["--version"], cancellationToken);
        _version = version is { ExitCode: 0 } ? version.StandardOutput.Split('\n')[0].Replace("QEMU emulator version ", "", StringComparison.Ordinal).Trim() : "";
        if (_version.Length == 0)
        {
            missing.Add($"{options.Qemu} (apt install qemu-system-x86)");
        }

        if (await HostTools.TryRunAsync(options.QemuImg, ["--version"], cancellationToken) is not { ExitCode: 0 })
        {
            missing.Add($"{options.QemuImg} (apt install qemu-utils)");
        }

        _kernel = options.Kernel ?? GuestBootImage.FindKernel() ?? "";
        if (!File.Exists(_kernel))
        {
            missing.Add("a guest kernel (apt install linux-image-cloud-amd64)");
        }

        foreach (var (file, package) in new[] { (options.Busybox, "busybox-static"), (options.Tini, "tini"), ("/sbin/mkfs.ext4", "e2fsprogs"), ("/dev/net/tun", "the tun module") })
        {
            if (!File.Exists(file))
            {
                missing.Add($"{file} ({package})");
            }
        }

        if (_cgroups.Probe() is { } cgroupProblem)
        {
            missing.Add(cgroupProblem);
        }

        if (missing.Count > 0)
        {
            return new DriverAvailability(Boundary, Name, false, "the microvm boundary needs: " + string.Join("; ", missing)) { Missing = missing };
        }

        _tscKhz = HostTscKhz();
        // The probe boots are the same for every airlockd in this process (tests host several): run them once.
        var probeKey = string.Join('|', options.Qemu, _kernel, options.Busybox, options.Accelerator, options.VmDir);
        var result = await BootProbes.GetOrAdd(probeKey, _ => new Lazy<Task<BootProbe>>(() => RunBootProbesAsync(CancellationToken.None))).Value;
        Accelerator = result.Accelerator;
        AcceleratorReason = result.Reason;
        if (result.Machine is { } machine)
        {
            Machine = machine;
            return new DriverAvailability(Boundary, Name, true,
                $"qemu {_version}, machine {Machine}, accelerator {Accelerator} ({AcceleratorReason}), kernel {GuestRelease}, cgroup {_cgroups.Mode}");
        }

        return new DriverAvailability(Boundary, Name, false, "no machine type boots the guest kernel: " + string.Join("; ", result.Problems)) { Missing = result.Problems };
    }

    private sealed record BootProbe(string Accelerator, string Reason, string? Machine, IReadOnlyList<string> Problems);

    private static readonly ConcurrentDictionary<string, Lazy<Task<BootProbe>>> BootProbes = new(StringComparer.Ordinal);

    /// <summary>KVM if a bounded probe boot under it works, else TCG; then the first machine type that boots.</summary>
    private async Task<BootProbe> RunBootProbesAsync(CancellationToken cancellationToken)
    {
        var probeImage = await BuildProbeImageAsync(cancellationToken);
        var kvmProblem = await ProbeKvmAsync(probeImage, cancellationToken);
        var accel = kvmProblem is null ? "kvm" : "tcg";
        var reason = kvmProblem is null ? "KVM probe boot finished" : kvmProblem;
        var problems = new List<string>();
        foreach (var machine in new[] { "microvm", "q35" })
        {
            var problem = await ProbeBootAsync(probeImage, accel, machine, options.ProbeTimeout, cancellationToken);
            if (problem is null)
            {
                return new BootProbe(accel, reason, machine, problems);
            }

            problems.Add($"{machine} probe boot under {accel}: {problem}");
        }

        return new BootProbe(accel, reason, null, problems);
    }

    private string GuestRelease => Path.GetFileName(_kernel).Replace("vmlinuz-", "", StringComparison.Ordinal);

    /// <summary>KVM is used only when a probe boot under it finishes; on nested hosts /dev/kvm may open while guests hang.</summary>
    private async Task<string?> ProbeKvmAsync(string probeImage, CancellationToken cancellationToken)
    {
        if (options.Accelerator == "tcg")
        {
            return "TCG forced by configuration";
        }

        if (!File.Exists("/dev/kvm"))
        {
            return "/dev/kvm does not exist";
        }

        try
        {
            await using var kvm = File.Open("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"/dev/kvm cannot be opened: {e.Message}";
        }

        var problem = await ProbeBootAsync(probeImage, "kvm", "microvm", options.KvmProbeTimeout, cancellationToken);
        return problem is null ? null : $"/dev/kvm opens but a KVM probe boot failed ({problem}); using TCG";
    }

    /// <summary>Boots the probe initramfs (it prints a marker and powers off); null when that worked in time.</summary>
    private async Task<string?> ProbeBootAsync(string probeImage, string accel, string machine, TimeSpan limit, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(limit + TimeSpan.FromSeconds(2));
        var output = new StringBuilder();
        try
        {
            // coreutils timeout SIGKILLs QEMU at the limit even if airlockd exits first (a guest hung under a broken
            // KVM ignores SIGINT, and an orphaned probe would spin forever); the token is a second net.
            List<string> args = ["-s", "KILL", ((int)Math.Ceiling(limit.TotalSeconds)).ToString(CultureInfo.InvariantCulture), options.Qemu];
            args.AddRange(MachineArgs(accel, machine, 1, 128));
            args.AddRange(["-serial", "stdio", "-kernel", _kernel, "-initrd", probeImage,
                "-append", GuestBootImage.CommandLine("", "probe", accel == "tcg" ? _tscKhz : 0, probe: true)]);
            var result = await Cli.Wrap("timeout").WithArguments(args)
                .WithStandardOutputPipe(PipeTarget.ToStringBuilder(output))
                .WithStandardErrorPipe(PipeTarget.ToStringBuilder(output))
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(timeout.Token);
            return output.ToString().Contains("AIRLOCK-PROBE-OK", StringComparison.Ordinal) ? null
                : result.ExitCode == 137 ? $"the guest did not reach init within {limit.TotalSeconds:0} s"
                : $"exit {result.ExitCode} without reaching init: {Tail(output.ToString())}";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"the guest did not reach init within {limit.TotalSeconds:0} s";
        }
    }

    private async Task<string> BuildProbeImageAsync(CancellationToken cancellationToken)
    {
        var dir = Path.Combine(options.VmDir, "probe");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "probe.cpio");
        var temp = $"{path}.{Environment.ProcessId}.tmp"; // other airlockd processes may be booting the current one
        await using (var stream = File.Create(temp))
        {
            using var cpio = new CpioWriter(stream);
            foreach (var d in new[] { "bin", "dev", "proc", "sys" })
            {
                cpio.AddDirectory(d);
            }

            cpio.AddFile("init", Encoding.UTF8.GetBytes("#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\necho AIRLOCK-PROBE-OK > /dev/ttyS0\n/bin/busybox poweroff -f\n"), 0x1ED);
            cpio.AddFile("bin/busybox", await File.ReadAllBytesAsync(options.Busybox, cancellationToken), 0x1ED);
        }

        File.Move(temp, path, overwrite: true);
        return path;
    }

    /// <summary>The QEMU arguments that define the virtual hardware; identical for a snapshot and every restore of it.</summary>
    internal IReadOnlyList<string> MachineArgs(string accel, string machine, int vcpus, int memoryMiB)
    {
        var m = machine == "microvm"
            // PIT/PIC/RTC on: the Debian kernel calibrates its clock with them under TCG.
            ? "microvm,pit=on,pic=on,rtc=on,isa-serial=on"
            : "q35,sata=off,smbus=off,vmport=off";
        return
        [
            "-machine", m,
            "-accel", accel == "kvm" ? "kvm" : "tcg,tb-size=64",
            "-cpu", accel == "kvm" ? "host" : "max",
            "-smp", vcpus.ToString(CultureInfo.InvariantCulture),
            "-m", memoryMiB.ToString(CultureInfo.InvariantCulture) + "M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            // QEMU's own seccomp filter: no exec, no privilege changes, no obsolete syscalls, no scheduler/affinity changes.
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ];
    }

    private static IReadOnlyList<string> DeviceArgs(string machine, string disk, string tap)
    {
        var suffix = machine == "microvm" ? "device" : "pci";
        return
        [
            "-drive", $"id=root,file={Opt(disk)},format=qcow2,if=none,cache=writeback,discard=unmap,aio=threads",
            "-device", $"virtio-blk-{suffix},drive=root",
            "-netdev", $"tap,id=net0,ifname={tap},script=no,downscript=no",
            "-device", $"virtio-net-{suffix},netdev=net0,mac=52:54:00:a1:70:02{(suffix == "pci" ? ",romfile=" : "")}",
            "-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", $"virtio-rng-{suffix},rng=rng0",
            // The console is a bounded ring in QEMU's memory (read over QMP): a guest printing forever fills no disk.
            "-chardev", "ringbuf,id=console,size=262144",
            "-serial", "chardev:console",
        ];
    }

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

    /// <inheritdoc />
    public bool CanKeepMemory => true;

    /// <inheritdoc />
    public bool PausedWithMemory(string stateDir) => HasPausedState(stateDir);

    public async Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken)
    {
        var vm = (QemuInstance)instance;
        await vm.SaveAsync(Path.Combine(vm.StateDir, MemoryFile), stopAfter: true, cancellationToken);
    }

    public async Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken)
    {
        await EnsureAvailableAsync(cancellationToken);
        var memory = Path.Combine(launch.StateDir, MemoryFile);
        if (!HasPausedState(launch.StateDir))
        {
            throw new InvalidOperationException($"sandbox {launch.SandboxId} has no complete paused state in {launch.StateDir}");
        }

        // The saved state fixes the virtual hardware: resume with exactly what the sandbox was started with.
        var config = VmConfig.Read(launch.StateDir);
        if (!config.Kernel.StartsWith("/boot/vmlinuz-", StringComparison.Ordinal) && config.Kernel != options.Kernel
            || !config.Initramfs.StartsWith(options.VmDir + "/boot-", StringComparison.Ordinal)
            || !File.Exists(config.Kernel) || !File.Exists(config.Initramfs))
        {
            throw new InvalidOperationException($"the paused sandbox's boot files ({config.Kernel}, {config.Initramfs}) are gone or not Airlock's; it cannot be resumed");
        }

        var boot = new GuestBoot(config.Kernel, report.Kernel, config.Initramfs, "");
        var uid = (uint)(options.UidBase + launch.Network.Index);
        PrepareStateDir(launch.StateDir, uid);
        NativeMethods.lchown(Path.Combine(launch.StateDir, DiskFile), uid, uid); // the new network index may mean a new uid

        var tap = await network.AttachGuestAsync(launch.Network, uid, cancellationToken);
        // memory.bin stays until airlockd has recorded the sandbox as running (DiscardPausedState): a crash in between
        // leaves a sandbox that is still paused, never one that is lost.
        return await LaunchAsync(launch, boot, tap, uid, launch.AccessToken, memory, cancellationToken, config.Accelerator, config.Machine);
    }

    public void DiscardPausedState(string stateDir) => File.Delete(Path.Combine(stateDir, MemoryFile));

    public bool HasPausedState(string stateDir) =>
        File.Exists(Path.Combine(stateDir, MemoryFile)) && File.Exists(Path.Combine(stateDir, DiskFile));

    public long PausedBytes(string stateDir)
    {
        long total = 0;
        foreach (var name in new[] { MemoryFile, DiskFile })
        {
            var file = new FileInfo(Path.Combine(stateDir, name));
            if (file.Exists)
            {
                total += file.Length;
            }
        }

        return total;
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

            foreach (var stale in new[] { MemoryFile, MemoryFile + ".tmp", "migrate.sock", "run/incoming.sock" })
            {
                File.Delete(Path.Combine(launch.StateDir, stale));
            }
        }
        catch
        {
            await qmp.DisposeAsync();
            throw;
        }

        return new QemuInstance(record.SandboxId, record.Report, null, pid, qmp, _cgroups, launch.StateDir, bootToken: null);
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

    /// <summary>Starts QEMU for a sandbox (cold boot, or restoring <paramref name="incoming"/>) and connects QMP.</summary>
    private async Task<QemuInstance> LaunchAsync(
        SandboxLaunch launch, GuestBoot boot, string tap, uint uid, string bootToken, string? incoming, CancellationToken cancellationToken,
        string? accel = null, string? machine = null)
    {
        accel ??= Accelerator;
        machine ??= Machine;
        var limits = launch.Limits;
        var args = new List<string>(MachineArgs(accel, machine, limits.VCpus, limits.MemoryMiB))
        {
            "-name", $"airlock-{launch.SandboxId},debug-threads=on",
            "-kernel", boot.Kernel, "-initrd", boot.Initramfs,
            "-append", GuestBootImage.CommandLine(bootToken, launch.Hostname, accel == "tcg" ? _tscKhz : 0, probe: false),
            "-qmp", $"unix:{Opt(Path.Combine(RunDir(launch.StateDir), "qmp.sock"))},server=on,wait=off",
            "-pidfile", Path.Combine(RunDir(launch.StateDir), "qemu.pid"),
        };
        args.AddRange(DeviceArgs(machine, Path.Combine(launch.StateDir, DiskFile), tap));
        if (incoming is not null)
        {
            args.AddRange(["-incoming", "defer"]);
        }

        // QEMU's cgroup: the guest's RAM plus QEMU's own overhead, its vCPUs' worth of CPU.
        var cgroupLimits = limits with { MemoryMiB = limits.MemoryMiB + options.OverheadMiB, Pids = 256, CpuMillis = Math.Max(limits.CpuMillis, limits.VCpus * 1000) };
        new VmConfig(boot.Kernel, boot.Initramfs, accel, machine).Write(launch.StateDir);
        var procs = _cgroups.Create(launch.SandboxId, cgroupLimits);
        var process = await DedicatedSpawner.StartAsync(LaunchCommand(launch, uid, procs, args));
        QmpClient? qmp = null;
        try
        {
            qmp = await ConnectQmpAsync(launch.StateDir, process, cancellationToken);
            var report = new BoundaryReport
            {
                Boundary = BoundaryKind.MicroVm.Name(),
                Driver = Name,
                Runtime = $"qemu {_version}",
                Machine = machine,
                Accelerator = accel,
                AcceleratorReason = accel == Accelerator ? AcceleratorReason : null,
                Kernel = boot.KernelRelease,
                Seccomp = "qemu -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                Cgroup = _cgroups.Mode,
                UserNamespace = false,
                Limits = limits,
                Network = $"netns {launch.Network.Namespace}: guest {launch.Network.SandboxAddress} behind {tap}, linked to host {launch.Network.HostAddress}; no route out",
                StartedFrom = incoming is null ? "cold boot" : Path.GetFileName(incoming) == MemoryFile ? "resumed from disk" : "snapshot",
            };
            var instance = new QemuInstance(launch.SandboxId, report, process, process.Id, qmp, _cgroups, launch.StateDir, bootToken);
            qmp = null;
            if (incoming is not null)
            {
                await instance.RestoreAsync(incoming, cancellationToken);
            }

            return instance;
        }
        catch
        {
            if (qmp is not null)
            {
                await qmp.DisposeAsync();
            }

            if (!process.HasExited)
            {
                process.Kill();
            }

            await _cgroups.DestroyAsync(launch.SandboxId, CancellationToken.None);
            throw;
        }
    }

    private static async Task<QmpClient> ConnectQmpAsync(string stateDir, System.Diagnostics.Process process, CancellationToken cancellationToken)
    {
        var connect = QmpClient.ConnectAsync(Path.Combine(RunDir(stateDir), "qmp.sock"), TimeSpan.FromSeconds(15), cancellationToken);
        var exited = process.WaitForExitAsync(cancellationToken);
        if (await Task.WhenAny(connect, exited) == exited && !connect.IsCompleted)
        {
            var log = Path.Combine(stateDir, "qemu.log");
            throw new InvalidOperationException($"qemu exited with code {process.ExitCode} before QMP answered: {(File.Exists(log) ? Tail(await File.ReadAllTextAsync(log, cancellationToken)) : "")}");
        }

        return await connect;
    }

    private ProcessStartInfo LaunchCommand(SandboxLaunch launch, uint uid, IReadOnlyList<string> cgroupProcs, IReadOnlyList<string> qemuArgs)
    {
        // As for bubblewrap: a root shell joins the cgroups before anything runs, then nsenter joins the sandbox's
        // network namespace (its tap is there) and setpriv drops to the sandbox's uid with no capabilities.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("""
            for procs in $AIRLOCK_CGROUP_PROCS; do echo $$ > "$procs" || exit 97; done
            exec "$@" >> "$AIRLOCK_LOG" 2>&1 < /dev/null
            """);
        start.ArgumentList.Add("airlock-launch");
        start.Environment.Clear();
        start.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        start.Environment["AIRLOCK_CGROUP_PROCS"] = string.Join(' ', cgroupProcs);
        start.Environment["AIRLOCK_LOG"] = Path.Combine(launch.StateDir, "qemu.log");
        var id = uid.ToString(CultureInfo.InvariantCulture);
        List<string> args = ["nsenter", $"--net=/run/netns/{launch.Network.Namespace}", "--", "setpriv", $"--reuid={id}", $"--regid={id}"];
        args.Add(KvmGroup() is { } kvm && Accelerator == "kvm" ? $"--groups={kvm}" : "--clear-groups");
        args.AddRange(["--inh-caps=-all", "--bounding-set=-all"]);
        if (!launch.KeepOnShutdown)
        {
            args.Add("--pdeathsig=KILL");
        }

        args.AddRange(["--", options.Qemu]);
        args.AddRange(qemuArgs);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return start;
    }

    /// <summary>What a resume must repeat exactly: the boot files and the virtual machine the state was saved from.</summary>
    private sealed record VmConfig(string Kernel, string Initramfs, string Accelerator, string Machine)
    {
        private const string FileName = "vm.conf";

        public void Write(string stateDir) =>
            File.WriteAllLines(Path.Combine(stateDir, FileName), [Kernel, Initramfs, Accelerator, Machine]);

        public static VmConfig Read(string stateDir)
        {
            var lines = File.ReadAllLines(Path.Combine(stateDir, FileName));
            return lines.Length >= 4
                ? new VmConfig(lines[0], lines[1], lines[2], lines[3])
                : throw new InvalidOperationException($"{Path.Combine(stateDir, FileName)} is incomplete");
        }
    }

    private sealed record Snapshot(string State, string Disk, string Token);

    /// <summary>
    /// The template's pre-booted snapshot for this VM size: boot once, wait for the agent, save device state and memory.
    /// Keyed by everything that must match on restore (kernel, initramfs, disk, VM size, accelerator, machine, QEMU).
    /// </summary>
    private async Task<Snapshot> EnsureSnapshotAsync(SandboxLaunch launch, GuestBoot boot, string baseDisk, string diskHash, CancellationToken cancellationToken)
    {
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n',
            SnapshotVersion, boot.Hash, diskHash, launch.Limits.VCpus, launch.Limits.MemoryMiB, Accelerator, Machine, _version, _tscKhz))))[..16];
        var dir = Path.Combine(options.VmDir, "snapshots", $"{launch.TemplateId}-{key}");
        var snapshot = new Snapshot(Path.Combine(dir, "state.bin"), Path.Combine(dir, "disk.qcow2"), Path.Combine(dir, "token"));
        var gate = _snapshotLocks.GetOrAdd(dir, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            if (!File.Exists(snapshot.Token))
            {
                // Other airlockd processes sharing this cache (tests, several data directories) build it once too.
                await using var held = await FileLock.AcquireAsync(dir + ".lock", cancellationToken);
                if (!File.Exists(snapshot.Token))
                {
                    await BuildSnapshotAsync(launch, boot, baseDisk, dir, snapshot, cancellationToken);
                }
            }

            return snapshot with { Token = (await File.ReadAllTextAsync(snapshot.Token, cancellationToken)).Trim() };
        }
        finally
        {
            gate.Release();
        }
    }

    private async Task BuildSnapshotAsync(SandboxLaunch launch, GuestBoot boot, string baseDisk, string dir, Snapshot snapshot, CancellationToken cancellationToken)
    {
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }

        Directory.CreateDirectory(dir);
        // The template VM is a sandbox of its own for the minute it lives: own id, namespace, cgroup and state dir, so a
        // crash while building leaves nothing the startup reconcile would not find and clean.
        var id = "t" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(10))[..19];
        var stateDir = Path.Combine(SandboxesDir, id);
        Directory.CreateDirectory(stateDir);
        SandboxNetwork? net = null;
        QemuInstance? vm = null;
        try
        {
            net = await network.CreateAsync(id, NetworkPolicy.DenyAll, cancellationToken);
            var uid = (uint)(options.UidBase + net.Index);
            PrepareStateDir(stateDir, uid);
            var disk = Path.Combine(stateDir, DiskFile);
            await CreateOverlayAsync(disk, baseDisk, "raw", uid, cancellationToken);
            var tap = await network.AttachGuestAsync(net, uid, cancellationToken);
            var token = NewToken();
            var template = launch with { SandboxId = id, StateDir = stateDir, Network = net, Hostname = "airlock-template", KeepOnShutdown = false };
            vm = await LaunchAsync(template, boot, tap, uid, token, incoming: null, cancellationToken);
            await WaitForHealthAsync(net, vm, options.BootTimeout, cancellationToken);
            await vm.SaveAsync(snapshot.State, stopAfter: true, cancellationToken);
            File.Move(disk, snapshot.Disk);
            // Root's and read-only: no sandbox uid (the template VM's included, when its index comes round again) may write it.
            NativeMethods.lchown(snapshot.Disk, 0, 0);
            UnixFiles.SetMode(snapshot.Disk, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            await File.WriteAllTextAsync(snapshot.Token + ".tmp", token, cancellationToken);
            UnixFiles.SetMode(snapshot.Token + ".tmp", UnixFileMode.UserRead | UnixFileMode.UserWrite);
            File.Move(snapshot.Token + ".tmp", snapshot.Token);
        }
        finally
        {
            if (vm is not null)
            {
                await vm.DisposeAsync();
            }

            await CleanupAsync(id, stateDir, CancellationToken.None);
            if (net is not null)
            {
                await network.DeleteAsync(net, CancellationToken.None);
            }
        }
    }

    /// <summary>Polls the agent's public /health over the sandbox's link until it answers.</summary>
    private async Task WaitForHealthAsync(SandboxNetwork net, QemuInstance vm, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var handler = new SocketsHttpHandler { ConnectCallback = async (_, token) => new NetworkStream(await network.ConnectAsync(net, options.AgentPort, token), ownsSocket: true) };
        using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        string last = "no answer";
        while (deadline.Elapsed < timeout)
        {
            if (vm.Exited.IsCompleted)
            {
                throw new InvalidOperationException($"the template VM exited while booting: {await vm.Exited}");
            }

            try
            {
                using var response = await http.GetAsync(new Uri($"http://{net.SandboxAddress}:{options.AgentPort}/health"), cancellationToken);
                if (response.IsSuccessStatusCode)
                {
                    return;
                }

                last = $"HTTP {(int)response.StatusCode}";
            }
            catch (Exception e) when (e is HttpRequestException or IOException or SocketException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = e.Message;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken);
        }

        throw new TimeoutException($"the template VM's agent was not healthy within {timeout.TotalSeconds:0} s ({last}); console: {await vm.ConsoleTailAsync(CancellationToken.None)}");
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
    private static void PrepareStateDir(string stateDir, uint uid)
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
        UnixFiles.AddMode(Path.GetDirectoryName(stateDir)!, UnixFileMode.OtherExecute);
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
