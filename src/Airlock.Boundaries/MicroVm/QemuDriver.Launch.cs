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

/// <summary>Starting QEMU for a sandbox: the virtual hardware, the command line, the launch as the sandbox uid, QMP.</summary>
public sealed partial class QemuDriver
{
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


    /// <summary>Starts QEMU for a sandbox (cold boot, or restoring <paramref name="incoming"/>) and connects QMP.</summary>
    private async Task<QemuInstance> LaunchAsync(
        SandboxLaunch launch, GuestBoot boot, string tap, uint uid, string bootToken, string? incoming, CancellationToken cancellationToken,
        string? accel = null, string? machine = null, string? startedFrom = null)
    {
        accel ??= Accelerator;
        machine ??= Machine;
        startedFrom ??= incoming is null ? "cold boot" : Path.GetFileName(incoming) == MemoryFile ? "resumed from disk" : "snapshot";
        Log.Launching(_logger, BoundaryKind.MicroVm.Name(), launch.SandboxId, $"{startedFrom}, {machine} under {accel}");
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
        var process = await DedicatedSpawner.StartAsync(LaunchCommand(launch, uid, procs, args), tethered: !launch.KeepOnShutdown);
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
                StartedFrom = startedFrom,
            };
            var instance = new QemuInstance(launch.SandboxId, report, process, process.Id, qmp, _cgroups, launch.StateDir, bootToken, new GuestLink(launch.Network, launch.AccessToken), _logger);
            Log.Launched(_logger, BoundaryKind.MicroVm.Name(), launch.SandboxId, process.Id);
            qmp = null;
            if (incoming is not null)
            {
                await instance.RestoreAsync(incoming, cancellationToken);
            }

            return instance;
        }
        catch (Exception e)
        {
            Log.LaunchFailed(_logger, BoundaryKind.MicroVm.Name(), launch.SandboxId, e);
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
        // As for bubblewrap: tethered to airlockd first (DedicatedSpawner), a root shell joins the cgroups before anything
        // runs, then nsenter joins the sandbox's network namespace (its tap is there) and setpriv drops to the sandbox's uid
        // with no capabilities and sets the parent-death signal again after that change (the kernel cleared the tether's).
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
}
