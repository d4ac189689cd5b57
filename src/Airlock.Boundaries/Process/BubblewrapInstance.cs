using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Process;

/// <summary>
/// The one owner of a running bubblewrap sandbox: its launcher process (or, after an airlockd restart, just its pid),
/// its cgroups and its overlay mount.
/// </summary>
internal sealed class BubblewrapInstance : ISandboxInstance
{
    private readonly System.Diagnostics.Process? _process;
    private readonly CgroupManager _cgroups;
    private readonly string _stateDir;
    private readonly CancellationTokenSource _watch = new();
    private readonly TaskCompletionSource<string> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state; // 0 running, 1 killed or detached

    public BubblewrapInstance(string sandboxId, BoundaryReport report, System.Diagnostics.Process? process, int pid, CgroupManager cgroups, string stateDir)
    {
        SandboxId = sandboxId;
        Report = report;
        _process = process;
        HostPid = pid;
        _cgroups = cgroups;
        _stateDir = stateDir;
        _ = WatchAsync();
    }

    public string SandboxId { get; }

    public BoundaryReport Report { get; }

    public int? HostPid { get; }

    public Task<string> Exited => _exited.Task;

    public TimeSpan? CpuUsed => _cgroups.CpuUsage(SandboxId);

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        Interlocked.Exchange(ref _state, 1);
        if (!_exited.Task.IsCompleted && HostPid is { } pid)
        {
            // bwrap passes SIGTERM on; the agent stops its commands. Then the cgroup makes sure.
            NativeMethods.kill(pid, 15);
            await Task.WhenAny(_exited.Task, Task.Delay(TimeSpan.FromSeconds(1), cancellationToken));
        }

        await _cgroups.DestroyAsync(SandboxId, cancellationToken);
        if (_process is not null)
        {
            await _process.WaitForExitAsync(cancellationToken);
        }

        Layers.WritableLayer.Unmount(_stateDir);
        await _watch.CancelAsync();
    }

    public async ValueTask DetachAsync()
    {
        Interlocked.Exchange(ref _state, 1);
        await _watch.CancelAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _state, 1) == 0)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await KillAsync(timeout.Token);
        }

        await _watch.CancelAsync();
        _process?.Dispose();
        _watch.Dispose();
    }

    private static readonly Dictionary<int, string> KnownCodes = new() { [97] = "could not join the sandbox's cgroups" };

    private async Task WatchAsync()
    {
        try
        {
            // Adopted after a restart, the process is not our child: its pid is watched instead.
            var code = await EntryProcess.WaitAsync(_process, HostPid, SandboxId, TimeSpan.FromMilliseconds(500), _watch.Token);
            _exited.TrySetResult(EntryProcess.Describe("the sandbox's entry process", code, _cgroups, SandboxId, Path.Combine(_stateDir, "sandbox.log"), KnownCodes));
        }
        catch (OperationCanceledException)
        {
            // Killed or detached: whoever did it reports.
            _exited.TrySetResult(Volatile.Read(ref _state) == 1 ? "stopped by airlockd" : "watch ended");
        }
    }
}
