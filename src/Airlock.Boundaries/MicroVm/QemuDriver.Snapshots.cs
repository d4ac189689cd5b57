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

/// <summary>The per-template pre-booted snapshots sandboxes start from.</summary>
public sealed partial class QemuDriver
{
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
}
