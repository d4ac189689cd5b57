using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// The one owner of a running QEMU: its process (or, after an airlockd restart, its pid), its QMP connection and its
/// cgroup. Saving and restoring state goes through QMP migration to and from a Unix socket airlockd serves, so QEMU
/// (which may not spawn processes under its seccomp filter) never opens a host file for it.
/// </summary>
internal sealed class QemuInstance : SandboxInstance
{
    private const long Unlimited = 1L << 40; // bytes/s: QEMU's default migration cap is 32 MiB/s
    private readonly QmpClient _qmp;
    private int _qmpClosed;

    public QemuInstance(
        string sandboxId, BoundaryReport report, System.Diagnostics.Process? process, int pid, QmpClient qmp, CgroupManager cgroups, string stateDir,
        string? bootToken, GuestLink guest, ILogger logger)
        : base(sandboxId, stateDir, report, process, pid, cgroups, logger, poll: TimeSpan.FromMilliseconds(500), bootToken)
    {
        _qmp = qmp;
        Guest = guest;
        _ = CapLogAsync();
    }

    /// <summary>How airlockd reaches the guest's agent (its link and access token), for a sync before a pause.</summary>
    public GuestLink Guest { get; }

    protected override TimeSpan GracePeriod => TimeSpan.FromSeconds(5);

    protected override string EntryName => "QEMU";

    protected override string LogPath => Path.Combine(StateDir, "qemu.log");

    /// <summary>Incoming migration: streams a saved state into this QEMU (started with <c>-incoming defer</c>) and runs it.</summary>
    public async Task RestoreAsync(string stateFile, CancellationToken cancellationToken)
    {
        var socketPath = Path.Combine(QemuDriver.RunDir(StateDir), "incoming.sock");
        File.Delete(socketPath);
        await _qmp.ExecuteAsync("migrate-incoming", w => w.WriteString("uri", "unix:" + socketPath), cancellationToken);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                break;
            }
            catch (SocketException) when (deadline.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(5, cancellationToken);
            }
        }

        await using (var stream = new NetworkStream(socket, ownsSocket: false))
        await using (var file = new FileStream(stateFile, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous))
        {
            await file.CopyToAsync(stream, 1 << 20, cancellationToken);
        }

        socket.Shutdown(SocketShutdown.Send);
        while (true)
        {
            var status = (await _qmp.ExecuteAsync("query-status", null, cancellationToken)).GetProperty("status").GetString();
            if (status == "running")
            {
                break;
            }

            if (status is "paused" or "postmigrate" or "prelaunch")
            {
                // The state was saved from a stopped VM, so it arrives stopped.
                await _qmp.ExecuteAsync("cont", null, cancellationToken);
                break;
            }

            if (status != "inmigrate")
            {
                throw new InvalidOperationException($"restoring {stateFile} left QEMU {status}");
            }

            await Task.Delay(5, cancellationToken);
        }

        File.Delete(socketPath);
    }

    /// <summary>
    /// Stops the guest and writes its device state and memory to <paramref name="path"/> (temp file, fsync, rename).
    /// With <paramref name="stopAfter"/> QEMU then exits. On any failure the guest runs again and the error is thrown.
    /// </summary>
    public async Task SaveAsync(string path, bool stopAfter, CancellationToken cancellationToken)
    {
        var socketPath = Path.Combine(StateDir, "migrate.sock");
        File.Delete(socketPath);
        var temp = path + ".tmp";
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(1);
        UnixFiles.SetMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
        await _qmp.ExecuteAsync("stop", null, cancellationToken);
        try
        {
            await _qmp.ExecuteAsync("migrate-set-parameters", w => w.WriteNumber("max-bandwidth", Unlimited), cancellationToken);
            await _qmp.ExecuteAsync("migrate", w => w.WriteString("uri", "unix:" + socketPath), cancellationToken);
            using var accept = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            accept.CancelAfter(TimeSpan.FromSeconds(15));
            using var connection = await listener.AcceptAsync(accept.Token);
            Exception? writeFailure = null;
            await using (var stream = new NetworkStream(connection, ownsSocket: false))
            {
                try
                {
                    await using var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, FileOptions.Asynchronous);
                    await stream.CopyToAsync(file, 1 << 20, cancellationToken);
                    await file.FlushAsync(cancellationToken);
                    file.Flush(flushToDisk: true);
                }
                catch (IOException e)
                {
                    // A full disk, typically: dropping the connection makes QEMU fail the migration.
                    writeFailure = e;
                }
            }

            connection.Close();
            var (status, error) = await WaitForMigrationAsync(cancellationToken);
            if (writeFailure is not null || status != "completed")
            {
                File.Delete(temp);
                throw new IOException($"saving the VM state to {path} failed: {writeFailure?.Message ?? error ?? status}", writeFailure);
            }

            UnixFiles.SetMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception) when (!Exited.IsCompleted)
        {
            File.Delete(temp);
            await _qmp.ExecuteAsync("cont", null, CancellationToken.None);
            throw;
        }
        finally
        {
            File.Delete(socketPath);
        }

        if (stopAfter)
        {
            await StopAsync(graceful: true, "pause with memory", cancellationToken);
        }
    }

    /// <summary>
    /// Pause without memory: the guest stops (QEMU drains and flushes its block devices when a VM stops, so root.qcow2
    /// holds everything the guest had written to its disk), <paramref name="stopped"/> records that, and QEMU quits. If
    /// the stop fails the guest runs on and the error is thrown.
    /// </summary>
    public async Task StopKeepingDiskAsync(Func<CancellationToken, Task> stopped, CancellationToken cancellationToken)
    {
        await _qmp.ExecuteAsync("stop", null, cancellationToken);
        try
        {
            await stopped(cancellationToken);
        }
        catch (Exception) when (!Exited.IsCompleted)
        {
            await _qmp.ExecuteAsync("cont", null, CancellationToken.None);
            throw;
        }

        await StopAsync(graceful: true, "pause without memory", cancellationToken);
    }

    private async Task<(string Status, string? Error)> WaitForMigrationAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var info = await _qmp.ExecuteAsync("query-migrate", null, cancellationToken);
            var status = info.TryGetProperty("status", out var s) ? s.GetString() ?? "" : "";
            if (status is "completed" or "failed" or "cancelled")
            {
                return (status, info.TryGetProperty("error-desc", out var e) ? e.GetString() : null);
            }

            await Task.Delay(5, cancellationToken);
        }
    }

    /// <summary>The last lines the guest printed on its serial console (kept in QEMU's ring buffer).</summary>
    public async Task<string> ConsoleTailAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            var data = await _qmp.ExecuteAsync("ringbuf-read", w =>
            {
                w.WriteString("device", "console");
                w.WriteNumber("size", 65536);
                w.WriteString("format", "utf8");
            }, timeout.Token);
            return QemuDriver.Tail(data.GetString() ?? "");
        }
        catch (Exception e) when (e is IOException or QmpException or OperationCanceledException or InvalidOperationException)
        {
            return "(console unavailable)";
        }
    }

    /// <summary>QMP quit: QEMU flushes its disks and exits (the cgroup kill makes sure if it lingers).</summary>
    protected override async Task SignalStopAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            await _qmp.ExecuteAsync("quit", null, timeout.Token);
        }
        catch (Exception e) when (e is IOException or QmpException or OperationCanceledException or ObjectDisposedException)
        {
            // Already gone, or not answering: the cgroup kill decides.
            Log.QmpFailed(Logger, SandboxId, "quit", e.Message);
        }
    }

    protected override Task ForceStopAsync(CancellationToken cancellationToken) => Cgroups.DestroyAsync(SandboxId, cancellationToken);

    protected override async ValueTask OnDetachedAsync()
    {
        if (Interlocked.Exchange(ref _qmpClosed, 1) == 0)
        {
            await _qmp.DisposeAsync();
        }
    }

    /// <summary>
    /// Only QEMU's CPU time (its cgroup: the vCPUs and the device emulation) is known from the host; memory and disk are
    /// the guest kernel's to tell (the agent's /metrics).
    /// </summary>
    public override ValueTask<ResourceSample?> SampleAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult<ResourceSample?>(new ResourceSample
        {
            At = DateTimeOffset.UtcNow,
            CpuCount = Report.Limits.VCpus,
            CpuUsed = Cgroups.CpuUsage(SandboxId),
        });
    }

    /// <summary>
    /// QEMU's stderr goes to qemu.log (opened O_APPEND by the launch shell); a guest that makes QEMU warn in a loop must not
    /// fill the disk, so past 1 MiB the log is cut to its last 64 KiB.
    /// </summary>
    private async Task CapLogAsync()
    {
        const long Limit = 1 << 20;
        const int Keep = 64 * 1024;
        var log = Path.Combine(StateDir, "qemu.log");
        try
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5));
            while (await timer.WaitForNextTickAsync(Watching))
            {
                var info = new FileInfo(log);
                if (!info.Exists || info.Length <= Limit)
                {
                    continue;
                }

                await using var stream = new FileStream(log, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
                var tail = new byte[Keep];
                stream.Seek(-Keep, SeekOrigin.End);
                await stream.ReadExactlyAsync(tail, Watching);
                stream.SetLength(0);
                stream.Seek(0, SeekOrigin.Begin);
                await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes("[airlock: earlier output cut at 1 MiB]\n"), Watching);
                await stream.WriteAsync(tail, Watching);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // stopped, or the state directory is gone
        }
    }

    protected override async ValueTask<string> DescribeExitAsync(int? exitCode)
    {
        var reason = exitCode switch
        {
            null => "the QEMU process is gone",
            0 when !StoppedByAirlock => "the guest powered off",
            > 128 => $"QEMU was killed by signal {exitCode - 128}",
            97 => "could not join the sandbox's cgroups",
            _ => $"QEMU exited with code {exitCode}",
        };
        var ooms = Cgroups.OomKills(SandboxId);
        if (ooms > 0)
        {
            reason += $" ({ooms} out-of-memory kill(s) in QEMU's cgroup)";
        }

        if (File.Exists(LogPath))
        {
            var tail = QemuDriver.Tail(await File.ReadAllTextAsync(LogPath, Encoding.UTF8));
            if (tail.Length > 0)
            {
                reason += ": " + tail;
            }
        }

        return reason;
    }
}

/// <summary>How airlockd reaches a microVM's agent: the sandbox's link and the access token the agent holds.</summary>
internal sealed record GuestLink(SandboxNetwork Network, string AccessToken);
