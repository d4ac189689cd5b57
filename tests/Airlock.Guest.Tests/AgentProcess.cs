using System.Diagnostics;

namespace Airlock.Guest.Tests;

/// <summary>Starting and stopping an agent process for a fixture: output drained, ready once /health answers.</summary>
internal static class AgentProcess
{
    public static async Task<Process> StartAsync(ProcessStartInfo start, Func<Task<bool>> healthy)
    {
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        for (var i = 0; i < 200; i++)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"the agent exited with {process.ExitCode}");
            }

            if (await healthy())
            {
                return process;
            }

            await Task.Delay(100);
        }

        process.Kill(entireProcessTree: true);
        process.Dispose();
        throw new TimeoutException("the agent did not answer /health within 20 s");
    }

    public static async Task StopAsync(Process? process)
    {
        if (process is { HasExited: false })
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }

        process?.Dispose();
    }
}
