using System.Net.Sockets;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Envd;
using Airlock.Envd.Client;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// Pause and resume: with memory (device state and RAM migrated to memory.bin, restored by an incoming migration) or
/// without (the guest's disk overlay kept, a cold boot from it on resume).
/// </summary>
public sealed partial class QemuDriver
{
    /// <summary>Written once a memory-less pause has stopped the guest with its disk flushed: root.qcow2 alone is the state.</summary>
    internal const string DiskOnlyMarker = "paused-disk-only";

    /// <summary>What a sandbox resumed from a memory-less pause reports it started from.</summary>
    internal const string ColdResumeStartedFrom = "booted from its paused disk (memory not kept)";

    /// <inheritdoc />
    public bool CanKeepMemory => true;

    /// <inheritdoc />
    public bool PausedWithMemory(string stateDir) =>
        File.Exists(Path.Combine(stateDir, MemoryFile)) && File.Exists(Path.Combine(stateDir, DiskFile));

    /// <summary>
    /// With memory: stop, migrate to memory.bin, quit. Without: the guest flushes its files (sync through its agent,
    /// best effort), stops (QEMU flushes the disk), and QEMU quits; root.qcow2 is all that is kept.
    /// </summary>
    public async Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken)
    {
        var vm = instance as QemuInstance ?? throw new ArgumentException($"{instance.GetType().Name} is not a QEMU sandbox", nameof(instance));
        if (keepMemory)
        {
            await vm.SaveAsync(Path.Combine(vm.StateDir, MemoryFile), stopAfter: true, cancellationToken);
            Log.Paused(_logger, vm.SandboxId, "memory and disk saved");
            return;
        }

        await SyncGuestAsync(vm, cancellationToken);
        var marker = Path.Combine(vm.StateDir, DiskOnlyMarker);
        File.Delete(Path.Combine(vm.StateDir, MemoryFile)); // a stale image must not bring back memory from an older pause
        await vm.StopKeepingDiskAsync(
            async ct => await File.WriteAllTextAsync(marker, "guest stopped with its disk flushed; memory not kept", ct),
            cancellationToken);
        Log.Paused(_logger, vm.SandboxId, "disk kept, memory not");
    }

    /// <summary>
    /// Asks the guest to write its page cache to its disk (<c>sync</c> as root through its agent), so files written
    /// but not yet synced survive the memory-less pause. Best effort, bounded: a guest that does not answer is paused
    /// with what its disk already holds (as after a power cut; ext4's journal keeps it consistent).
    /// </summary>
    private async Task SyncGuestAsync(QemuInstance vm, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(15));
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) => new NetworkStream(await network.ConnectAsync(vm.Guest.Network, options.AgentPort, ct), ownsSocket: true),
        };
        using var http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        var agent = new EnvdClient(http, new EnvdClientOptions { BaseAddress = new Uri($"http://{vm.Guest.Network.SandboxAddress}:{options.AgentPort}/"), AccessToken = vm.Guest.AccessToken });
        try
        {
            int? exit = null;
            await foreach (var output in agent.StartAsync(new ProcessSpec { Command = "/bin/sync", User = "root" }, timeout.Token))
            {
                if (output is ProcessExited exited)
                {
                    exit = exited.ExitCode;
                }
            }

            if (exit != 0)
            {
                Log.GuestSyncFailed(_logger, vm.SandboxId, $"sync exited with {exit?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "no code"}");
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException or SocketException or EnvdException
            or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            Log.GuestSyncFailed(_logger, vm.SandboxId, e.Message);
        }
    }

    public async Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken)
    {
        await EnsureAvailableAsync(cancellationToken);
        if (!HasPausedState(launch.StateDir))
        {
            throw new InvalidOperationException($"sandbox {launch.SandboxId} has no complete paused state in {launch.StateDir}");
        }

        var uid = (uint)(options.UidBase + launch.Network.Index);
        if (!PausedWithMemory(launch.StateDir))
        {
            return await BootFromPausedDiskAsync(launch, uid, cancellationToken);
        }

        // The saved state fixes the virtual hardware: resume with exactly what the sandbox was started with.
        var config = VmConfig.Read(launch.StateDir);
        if (!config.Kernel.StartsWith("/boot/vmlinuz-", StringComparison.Ordinal) && config.Kernel != options.Kernel
            || !config.Initramfs.StartsWith(options.VmDir + "/boot-", StringComparison.Ordinal)
            || !File.Exists(config.Kernel) || !File.Exists(config.Initramfs))
        {
            throw new InvalidOperationException($"the paused sandbox's boot files ({config.Kernel}, {config.Initramfs}) are gone or not Airlock's; it cannot be resumed");
        }

        Log.Resuming(_logger, launch.SandboxId, "restoring memory and devices");
        var boot = new GuestBoot(config.Kernel, report.Kernel, config.Initramfs, "");
        PrepareStateDir(launch.StateDir, uid);
        NativeMethods.lchown(Path.Combine(launch.StateDir, DiskFile), uid, uid); // the new network index may mean a new uid

        var tap = await network.AttachGuestAsync(launch.Network, uid, cancellationToken);
        // memory.bin stays until airlockd has recorded the sandbox as running (DiscardPausedState): a crash in between
        // leaves a sandbox that is still paused, never one that is lost.
        return await LaunchAsync(launch, boot, tap, uid, launch.AccessToken, Path.Combine(launch.StateDir, MemoryFile), cancellationToken, config.Accelerator, config.Machine);
    }

    /// <summary>
    /// A memory-less resume: nothing constrains the virtual hardware, so the current kernel, initramfs (and agent),
    /// accelerator and machine boot on the kept disk, with a fresh boot token for airlockd to replace.
    /// </summary>
    private async Task<ISandboxInstance> BootFromPausedDiskAsync(SandboxLaunch launch, uint uid, CancellationToken cancellationToken)
    {
        Log.Resuming(_logger, launch.SandboxId, "cold boot from the kept disk");
        var boot = await EnsureBootAsync(launch.GuestAgentPath, cancellationToken);
        PrepareStateDir(launch.StateDir, uid);
        NativeMethods.lchown(Path.Combine(launch.StateDir, DiskFile), uid, uid);
        var tap = await network.AttachGuestAsync(launch.Network, uid, cancellationToken);
        return await LaunchAsync(launch, boot, tap, uid, NewToken(), incoming: null, cancellationToken, startedFrom: ColdResumeStartedFrom);
    }

    public void DiscardPausedState(string stateDir)
    {
        File.Delete(Path.Combine(stateDir, MemoryFile));
        File.Delete(Path.Combine(stateDir, DiskOnlyMarker));
    }

    /// <summary>The disk overlay, and either the memory image or the mark of a memory-less pause that flushed it.</summary>
    public bool HasPausedState(string stateDir) =>
        File.Exists(Path.Combine(stateDir, DiskFile))
        && (File.Exists(Path.Combine(stateDir, MemoryFile)) || File.Exists(Path.Combine(stateDir, DiskOnlyMarker)));

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
}
