using System.Diagnostics;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Boundaries;

/// <summary>
/// What every running sandbox shares whatever its boundary (bwrap, runc, qemu): the watch of its entry process (our
/// child, or an adopted pid), the one stop (graceful, then forceful, run once however many callers ask), detaching
/// (stop watching, leave it running) and disposal (kill unless stopped or detached). A boundary adds only how to ask its
/// entry process to stop and how to make sure it did.
/// </summary>
/// <remarks>
/// <code>
/// running ──KillAsync──▶ [once] signal (boundary) ─ wait ≤ grace ─ force (boundary) ─ wait for our child ─ watch ends
///    │     └─StopAsync(graceful: false)─▶ the same without the signal (pause: nothing may run once it is frozen)
///    ├─────DetachAsync──▶ watch ends, processes keep running (airlockd leaving them for its successor)
///    └─────DisposeAsync─▶ KillAsync unless already stopped or detached
/// Exited: the entry process's end as the boundary describes it, or "stopped by airlockd"
/// </code>
/// </remarks>
internal abstract class SandboxInstance : ISandboxInstance
{
    private static readonly TimeSpan DisposeKillTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ChildExitTimeout = TimeSpan.FromSeconds(10);
    private readonly System.Diagnostics.Process? _child;
    private readonly CancellationTokenSource _watch = new();
    private readonly TaskCompletionSource<string> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private Task? _stop;
    private int _state; // 0 running, 1 stopped by airlockd (killed, paused) or detached

    protected SandboxInstance(
        string sandboxId, string stateDir, BoundaryReport report, System.Diagnostics.Process? child, int pid, CgroupManager cgroups, ILogger logger, TimeSpan poll,
        string? bootToken = null)
    {
        BootToken = bootToken;
        SandboxId = sandboxId;
        StateDir = stateDir;
        Report = report;
        _child = child;
        HostPid = pid;
        Cgroups = cgroups;
        Logger = logger;
        _ = WatchAsync(poll);
    }

    public string SandboxId { get; }

    public string StateDir { get; }

    public BoundaryReport Report { get; }

    public int? HostPid { get; }

    public Task<string> Exited => _exited.Task;

    /// <summary>The token the agent starts with, when airlockd must replace it through SetIdentity (container, microVM).</summary>
    public string? BootToken { get; }

    public virtual TimeSpan? CpuUsed => Cgroups.CpuUsage(SandboxId);

    protected CgroupManager Cgroups { get; }

    protected ILogger Logger { get; }

    /// <summary>Whether airlockd stopped, paused or detached this sandbox (so its end is not a failure).</summary>
    protected bool StoppedByAirlock => Volatile.Read(ref _state) == 1;

    /// <summary>Whether a stop (kill or pause) has begun; a second one only waits for the first.</summary>
    public bool Stopping
    {
        get
        {
            lock (_gate)
            {
                return _stop is not null;
            }
        }
    }

    /// <summary>Cancelled when the watch ends (stopped, detached, disposed): the end of the instance's background work.</summary>
    protected CancellationToken Watching => _watch.Token;

    /// <summary>How long the entry process gets between the polite signal and the forceful stop.</summary>
    protected abstract TimeSpan GracePeriod { get; }

    /// <summary>Who the entry process is, for <see cref="Exited"/> ("the container's init").</summary>
    protected abstract string EntryName { get; }

    /// <summary>Exit codes the launch wrapper uses for its own failures.</summary>
    protected virtual IReadOnlyDictionary<int, string>? KnownExitCodes => null;

    /// <summary>Where the entry process's output goes (its tail explains an unexpected end).</summary>
    protected virtual string LogPath => Path.Combine(StateDir, "sandbox.log");

    /// <summary>Asks the entry process to stop (SIGTERM, runc kill, QMP quit); it gets <see cref="GracePeriod"/>.</summary>
    protected abstract Task SignalStopAsync(CancellationToken cancellationToken);

    /// <summary>Makes sure nothing of the sandbox runs any more and frees what it holds (cgroups, mounts, runtime state).</summary>
    protected abstract Task ForceStopAsync(CancellationToken cancellationToken);

    /// <summary>Graceful stop, then kill; frees cgroups and mounts. Runs once: later calls wait for the first.</summary>
    public Task KillAsync(CancellationToken cancellationToken) => StopAsync(graceful: true, "kill", cancellationToken);

    /// <summary>
    /// Stops the sandbox once (graceful: signal first; otherwise straight to the forceful stop, as a pause does after
    /// freezing). A stop that failed or was cancelled may be retried.
    /// </summary>
    protected Task StopAsync(bool graceful, string why, CancellationToken cancellationToken)
    {
        Task stop;
        lock (_gate)
        {
            if (_stop is null || _stop.IsFaulted || _stop.IsCanceled)
            {
                Interlocked.Exchange(ref _state, 1);
                _stop = RunStopAsync(graceful, why, cancellationToken);
            }

            stop = _stop;
        }

        return stop.WaitAsync(cancellationToken);
    }

    private async Task RunStopAsync(bool graceful, string why, CancellationToken cancellationToken)
    {
        var elapsed = Stopwatch.StartNew();
        Log.Stopping(Logger, SandboxId, Report.Boundary, why, graceful);
        try
        {
            if (graceful && !_exited.Task.IsCompleted)
            {
                await SignalStopAsync(cancellationToken);
                await Task.WhenAny(_exited.Task, Task.Delay(GracePeriod, cancellationToken));
            }

            await ForceStopAsync(cancellationToken);
            await WaitForChildAsync(cancellationToken);
            await _watch.CancelAsync();
            Log.Stopped(Logger, SandboxId, why, (long)elapsed.Elapsed.TotalMilliseconds);
        }
        catch (Exception e)
        {
            Log.StopFailed(Logger, SandboxId, why, e);
            throw;
        }
    }

    /// <summary>Our own child (the launch wrapper) must have exited too; after the forceful stop it gets 10 s, then SIGKILL.</summary>
    private async Task WaitForChildAsync(CancellationToken cancellationToken)
    {
        if (_child is null)
        {
            return;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ChildExitTimeout);
        try
        {
            await _child.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            _child.Kill(entireProcessTree: true);
        }
    }

    /// <summary>
    /// Pause to disk where only files are kept: freeze so nothing writes, then the forceful stop (no signal: frozen
    /// processes would not see it, and a sandbox told to stop could still write). If the stop cannot begin, the sandbox
    /// is thawed and keeps running.
    /// </summary>
    public async Task PauseToDiskAsync(CancellationToken cancellationToken)
    {
        if (Stopping || _exited.Task.IsCompleted)
        {
            throw new InvalidOperationException($"sandbox {SandboxId} is not running, so it cannot be paused");
        }

        try
        {
            await FreezeForPauseAsync(cancellationToken);
        }
        catch (Exception e)
        {
            Log.PauseFailed(Logger, SandboxId, e);
            await ThawAfterFailedPauseAsync(CancellationToken.None);
            throw;
        }

        await StopAsync(graceful: false, "pause", cancellationToken);
        Log.Paused(Logger, SandboxId, "processes stopped, files kept");
    }

    /// <summary>Stops every process of the sandbox in place before a pause to disk.</summary>
    protected virtual Task FreezeForPauseAsync(CancellationToken cancellationToken)
    {
        Cgroups.SetFrozen(SandboxId, frozen: true);
        return Task.CompletedTask;
    }

    /// <summary>Lets the sandbox run again when its pause failed before anything was stopped.</summary>
    protected virtual Task ThawAfterFailedPauseAsync(CancellationToken cancellationToken)
    {
        Cgroups.SetFrozen(SandboxId, frozen: false);
        return Task.CompletedTask;
    }

    /// <summary>Detaches without killing (airlockd shutting down with keep-on-shutdown).</summary>
    public async ValueTask DetachAsync()
    {
        Interlocked.Exchange(ref _state, 1);
        await _watch.CancelAsync();
        Log.Detached(Logger, SandboxId, HostPid ?? 0);
        await OnDetachedAsync();
    }

    /// <summary>Releases what the instance holds besides processes (a QMP connection) when it is detached or disposed.</summary>
    protected virtual ValueTask OnDetachedAsync() => ValueTask.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _state, 1) == 0)
        {
            using var timeout = new CancellationTokenSource(DisposeKillTimeout);
            await KillAsync(timeout.Token);
        }

        await _watch.CancelAsync();
        await OnDetachedAsync();
        _child?.Dispose();
        _watch.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// What the sandbox uses now: CPU and memory from its cgroup, disk from its mounted writable layer. The limit is
    /// the total where the cgroup has one.
    /// </summary>
    public virtual ValueTask<ResourceSample?> SampleAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var memory = Cgroups.Memory(SandboxId);
        var disk = WritableLayer.Usage(StateDir);
        var limits = Report.Limits;
        return ValueTask.FromResult<ResourceSample?>(new ResourceSample
        {
            At = DateTimeOffset.UtcNow,
            CpuCount = Math.Max(1, (limits.CpuMillis + 999) / 1000),
            CpuUsed = Cgroups.CpuUsage(SandboxId),
            MemoryUsedBytes = memory?.Used ?? 0,
            MemoryTotalBytes = memory?.Limit ?? (long)limits.MemoryMiB * 1024 * 1024,
            DiskUsedBytes = disk?.Used ?? 0,
            DiskTotalBytes = disk?.Total ?? (long)limits.DiskMiB * 1024 * 1024,
        });
    }

    /// <summary>Why the entry process ended, when airlockd did not end it.</summary>
    protected virtual ValueTask<string> DescribeExitAsync(int? exitCode) =>
        ValueTask.FromResult(EntryProcess.Describe(EntryName, exitCode, Cgroups, SandboxId, LogPath, KnownExitCodes));

    private async Task WatchAsync(TimeSpan poll)
    {
        try
        {
            // Adopted after a restart (or run detached), the entry process is not our child: its pid is watched instead.
            var code = await EntryProcess.WaitAsync(_child, HostPid, SandboxId, poll, _watch.Token);
            var reason = await DescribeExitAsync(code);
            if (_exited.TrySetResult(reason) && !StoppedByAirlock)
            {
                Log.EntryExited(Logger, SandboxId, reason);
            }
        }
        catch (OperationCanceledException)
        {
            // Killed, paused or detached: whoever did it reports.
            _exited.TrySetResult(StoppedByAirlock ? "stopped by airlockd" : "watch ended");
        }
    }
}
