using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Container;

/// <summary>
/// The one owner of a running container: the runtime process it was started with (attached mode) or just the
/// container's init pid (detached, or adopted after an airlockd restart), its cgroups and its mounts.
/// </summary>
internal sealed class RuncInstance : ISandboxInstance, IFreezableInstance
{
    private readonly RuncDriver _driver;
    private readonly System.Diagnostics.Process? _process;
    private readonly CgroupManager _cgroups;
    private readonly CancellationTokenSource _watch = new();
    private readonly TaskCompletionSource<string> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state; // 0 running, 1 killed, paused or detached

    public RuncInstance(RuncDriver driver, string sandboxId, string stateDir, BoundaryReport report, System.Diagnostics.Process? process, int pid, CgroupManager cgroups)
    {
        _driver = driver;
        SandboxId = sandboxId;
        StateDir = stateDir;
        Report = report;
        _process = process;
        HostPid = pid;
        _cgroups = cgroups;
        _ = WatchAsync();
    }

    public string SandboxId { get; }

    public string StateDir { get; }

    public BoundaryReport Report { get; }

    public int? HostPid { get; }

    public string? BootToken { get; init; }

    public Task<string> Exited => _exited.Task;

    public TimeSpan? CpuUsed => _cgroups.CpuUsage(SandboxId);

    /// <summary>Stops every process in the container with the freezer (memory stays, nothing runs).</summary>
    public async Task FreezeAsync(CancellationToken cancellationToken)
    {
        if (Frozen)
        {
            return;
        }

        var result = await HostTools.TryRunAsync(_driver.RuntimeBinary, [.. _driver.RuntimeArgs(), "pause", SandboxId], cancellationToken);
        if (result is not { ExitCode: 0 })
        {
            throw new InvalidOperationException($"{_driver.RuntimeBinary} pause failed: {result?.StandardError.Trim()}");
        }

        Frozen = true;
    }

    /// <summary>An adopted container the runtime reports as paused.</summary>
    internal void MarkFrozen() => Frozen = true;

    /// <summary>Whether the freezer holds the container (as far as this instance knows).</summary>
    public bool Frozen { get; private set; }

    /// <summary>Lets a frozen container run again.</summary>
    public async Task ThawAsync(CancellationToken cancellationToken)
    {
        var result = await HostTools.TryRunAsync(_driver.RuntimeBinary, [.. _driver.RuntimeArgs(), "resume", SandboxId], cancellationToken);
        if (result is not { ExitCode: 0 })
        {
            throw new InvalidOperationException($"{_driver.RuntimeBinary} resume failed: {result?.StandardError.Trim()}");
        }

        Frozen = false;
    }

    /// <summary>Pause to disk: the processes go, the layer image stays.</summary>
    public async Task StopForPauseAsync(CancellationToken cancellationToken)
    {
        Interlocked.Exchange(ref _state, 1);
        await _driver.StopAsync(SandboxId, StateDir, cancellationToken);
        await WaitForRuntimeAsync(cancellationToken);
        await _watch.CancelAsync();
    }

    public async Task KillAsync(CancellationToken cancellationToken)
    {
        Interlocked.Exchange(ref _state, 1);
        if (Frozen)
        {
            await ThawAsync(cancellationToken); // signals reach frozen tasks only once they run again
        }

        if (!_exited.Task.IsCompleted)
        {
            // tini passes SIGTERM to the agent, which stops its commands; then delete --force and the cgroup make sure.
            await HostTools.TryRunAsync(_driver.RuntimeBinary, [.. _driver.RuntimeArgs(), "kill", SandboxId, "TERM"], cancellationToken);
            await Task.WhenAny(_exited.Task, Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken));
        }

        await _driver.StopAsync(SandboxId, StateDir, cancellationToken);
        await WaitForRuntimeAsync(cancellationToken);
        await _watch.CancelAsync();
    }

    private async Task WaitForRuntimeAsync(CancellationToken cancellationToken)
    {
        if (_process is not null)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                _process.Kill();
            }
        }
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

    private async Task WatchAsync()
    {
        try
        {
            // Detached or adopted, the container's init is not our child: its pid is watched instead.
            var code = await EntryProcess.WaitAsync(_process, HostPid, SandboxId, TimeSpan.FromMilliseconds(250), _watch.Token);
            _exited.TrySetResult(EntryProcess.Describe("the container's init", code, _cgroups, SandboxId, Path.Combine(StateDir, "sandbox.log")));
        }
        catch (OperationCanceledException)
        {
            _exited.TrySetResult(Volatile.Read(ref _state) == 1 ? "stopped by airlockd" : "watch ended");
        }
    }
}
