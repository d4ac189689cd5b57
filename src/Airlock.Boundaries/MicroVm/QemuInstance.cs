using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// The one owner of a running QEMU: its process (or, after an airlockd restart, its pid), its QMP connection and its
/// cgroup. Saving and restoring state goes through QMP migration to and from a Unix socket airlockd serves, so QEMU
/// (which may not spawn processes under its seccomp filter) never opens a host file for it.
/// </summary>
internal sealed class QemuInstance : ISandboxInstance
{
    private const long Unlimited = 1L << 40; // bytes/s: QEMU's default migration cap is 32 MiB/s
    private readonly System.Diagnostics.Process? _process;
    private readonly QmpClient _qmp;
    private readonly CgroupManager _cgroups;
    private readonly CancellationTokenSource _watch = new();
    private readonly TaskCompletionSource<string> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state; // 0 running, 1 stopped by airlockd (killed, paused or detached)

    public QemuInstance(string sandboxId, BoundaryReport report, System.Diagnostics.Process? process, int pid, QmpClient qmp, CgroupManager cgroups, string stateDir, string? bootToken)
    {
        SandboxId = sandboxId;
        Report = report;
        _process = process;
        HostPid = pid;
        _qmp = qmp;
        _cgroups = cgroups;
        StateDir = stateDir;
        BootToken = bootToken;
        _ = WatchAsync();
        _ = CapLogAsync();
    }

    public string SandboxId { get; }

    public BoundaryReport Report { get; }

    public int? HostPid { get; }

    public string StateDir { get; }

    public string? BootToken { get; }

    public TimeSpan? CpuUsed => _cgroups.CpuUsage(SandboxId);

    public Task<string> Exited => _exited.Task;

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
        catch (Exception) when (!_exited.Task.IsCompleted)
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
            Interlocked.Exchange(ref _state, 1);
            await QuitAsync(cancellationToken);
        }
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

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        Interlocked.Exchange(ref _state, 1);
        if (!_exited.Task.IsCompleted)
        {
            await QuitAsync(cancellationToken);
        }

        await _cgroups.DestroyAsync(SandboxId, cancellationToken);
        if (_process is not null)
        {
            await _process.WaitForExitAsync(cancellationToken);
        }

        await _watch.CancelAsync();
    }

    /// <summary>QMP quit (QEMU flushes its disks and exits), then SIGKILL through the cgroup if it lingers.</summary>
    private async Task QuitAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            await _qmp.ExecuteAsync("quit", null, timeout.Token);
        }
        catch (Exception e) when (e is IOException or QmpException or OperationCanceledException)
        {
            // Already gone, or not answering: the cgroup kill below decides.
        }

        await Task.WhenAny(_exited.Task, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken));
        if (!_exited.Task.IsCompleted)
        {
            await _cgroups.DestroyAsync(SandboxId, cancellationToken);
        }
        else
        {
            await _cgroups.DestroyAsync(SandboxId, cancellationToken);
        }
    }

    public async ValueTask DetachAsync()
    {
        Interlocked.Exchange(ref _state, 1);
        await _watch.CancelAsync();
        await _qmp.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _state, 1) == 0)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await KillAsync(timeout.Token);
        }

        await _watch.CancelAsync();
        await _qmp.DisposeAsync();
        _process?.Dispose();
        _watch.Dispose();
    }

    private async Task WatchAsync()
    {
        try
        {
            var code = await EntryProcess.WaitAsync(_process, HostPid, SandboxId, TimeSpan.FromMilliseconds(500), _watch.Token);
            _exited.TrySetResult(await DescribeAsync(code));
        }
        catch (OperationCanceledException)
        {
            _exited.TrySetResult(Volatile.Read(ref _state) == 1 ? "stopped by airlockd" : "watch ended");
        }
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
            while (await timer.WaitForNextTickAsync(_watch.Token))
            {
                var info = new FileInfo(log);
                if (!info.Exists || info.Length <= Limit)
                {
                    continue;
                }

                await using var stream = new FileStream(log, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
                var tail = new byte[Keep];
                stream.Seek(-Keep, SeekOrigin.End);
                await stream.ReadExactlyAsync(tail, _watch.Token);
                stream.SetLength(0);
                stream.Seek(0, SeekOrigin.Begin);
                await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes("[airlock: earlier output cut at 1 MiB]\n"), _watch.Token);
                await stream.WriteAsync(tail, _watch.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // stopped, or the state directory is gone
        }
    }

    private async Task<string> DescribeAsync(int? exitCode)
    {
        var reason = exitCode switch
        {
            null => "the QEMU process is gone",
            0 when Volatile.Read(ref _state) == 0 => "the guest powered off",
            > 128 => $"QEMU was killed by signal {exitCode - 128}",
            97 => "could not join the sandbox's cgroups",
            _ => $"QEMU exited with code {exitCode}",
        };
        var ooms = _cgroups.OomKills(SandboxId);
        if (ooms > 0)
        {
            reason += $" ({ooms} out-of-memory kill(s) in QEMU's cgroup)";
        }

        var log = Path.Combine(StateDir, "qemu.log");
        if (File.Exists(log))
        {
            var tail = QemuDriver.Tail(await File.ReadAllTextAsync(log, Encoding.UTF8));
            if (tail.Length > 0)
            {
                reason += ": " + tail;
            }
        }

        return reason;
    }
}
