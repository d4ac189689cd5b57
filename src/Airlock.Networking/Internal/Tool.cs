using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Networking.Internal;

/// <summary>Result of one short-lived <c>ip</c>/<c>nft</c>/<c>sysctl</c> invocation.</summary>
internal readonly record struct ToolResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>
/// Runs the short-lived network tools. CliWrap owns each child process and kills it when the
/// timeout or the caller's token fires, so no <c>ip</c>/<c>nft</c> outlives its call.
/// </summary>
internal static class Tool
{
    public static async Task<ToolResult> RunAsync(
        string program, IReadOnlyList<string> args, string? stdin, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        var command = Cli.Wrap(program)
            .WithArguments(args)
            .WithValidation(CommandResultValidation.None)
            .WithEnvironmentVariables(e => e.Set("LC_ALL", "C"));
        if (stdin is not null)
        {
            command = command.WithStandardInputPipe(PipeSource.FromString(stdin, Encoding.UTF8));
        }

        try
        {
            var result = await command.ExecuteBufferedAsync(Encoding.UTF8, Encoding.UTF8, cts.Token);
            return new ToolResult(result.ExitCode, result.StandardOutput, result.StandardError);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"'{program} {string.Join(' ', args)}' did not finish within {timeout.TotalSeconds:0} s.");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"Cannot start '{program}': {ex.Message}. Is it installed and on PATH?", ex);
        }
    }

    /// <summary>Runs and throws <see cref="NetworkSetupException"/> naming the command when it fails.</summary>
    public static async Task<ToolResult> RunCheckedAsync(
        string program, IReadOnlyList<string> args, string? stdin, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var result = await RunAsync(program, args, stdin, timeout, cancellationToken);
        if (!result.Succeeded)
        {
            throw new NetworkSetupException(
                $"'{program} {string.Join(' ', args)}' failed with exit code {result.ExitCode}: {result.StandardError.Trim()}");
        }

        return result;
    }
}
