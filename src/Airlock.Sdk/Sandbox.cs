using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using Airlock.Core.Sandboxes;
using Airlock.Envd.Client;

namespace Airlock.Sdk;

/// <summary>
/// A running sandbox. Disposing it kills it, unless <see cref="Detach"/> was called first.
/// </summary>
public sealed class Sandbox : IAsyncDisposable
{
    /// <summary>The port the sandbox's guest agent listens on; airlockd routes to it by the <c>E2b-Sandbox-Port</c> header.</summary>
    public const int AgentPort = 49983;

    private readonly AirlockClient _client;
    private int _detached;
    private int _disposed;

    internal Sandbox(AirlockClient client, string id, string templateId, string accessToken, BoundaryReport? boundary)
    {
        _client = client;
        Id = id;
        TemplateId = templateId;
        Boundary = boundary;
        Envd = new EnvdClient(client.Http, CreateEnvdOptions(client.BaseUrl, id, accessToken));
        Files = new SandboxFiles(this);
    }

    /// <summary>Sandbox id (20 characters, [a-z0-9]).</summary>
    public string Id { get; }

    /// <summary>The template the sandbox was made from.</summary>
    public string TemplateId { get; }

    /// <summary>The isolation the sandbox really got (measured by airlockd); null if airlockd did not report it.</summary>
    public BoundaryReport? Boundary { get; }

    /// <summary>The sandbox's filesystem.</summary>
    public SandboxFiles Files { get; }

    internal EnvdClient Envd { get; }

    /// <summary>Keeps the sandbox alive after this object is disposed (until its timeout).</summary>
    public void Detach() => Interlocked.Exchange(ref _detached, 1);

    /// <summary>
    /// Runs <paramref name="command"/> with <c>/bin/bash -l -c</c> (like E2B) and streams its output as it comes;
    /// the last event is always a <see cref="CommandExit"/>.
    /// </summary>
    /// <exception cref="AirlockApiException">The sandbox or its agent refused the command, or the stream broke.</exception>
    public async IAsyncEnumerable<CommandOutput> RunAsync(string command, RunOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        options ??= new RunOptions();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (options.Timeout is { } limit)
        {
            timeout.CancelAfter(limit);
        }

        var spec = new ProcessSpec
        {
            Command = "/bin/bash",
            Args = ["-l", "-c", command],
            Cwd = options.Cwd,
            Env = options.Envs,
            User = options.User,
        };

        var stdout = new Utf8Chunks();
        var stderr = new Utf8Chunks();
        var exited = false;
        await using var outputs = Envd.StartAsync(spec, timeout.Token).GetAsyncEnumerator(timeout.Token);
        while (true)
        {
            ProcessOutput output;
            try
            {
                if (!await outputs.MoveNextAsync().ConfigureAwait(false))
                {
                    break;
                }

                output = outputs.Current;
            }
            catch (EnvdException e)
            {
                throw Translate(e);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested && timeout.IsCancellationRequested)
            {
                throw new AirlockApiException(HttpStatusCode.RequestTimeout, "command_timeout", $"the command did not finish within {options.Timeout}.", e);
            }
            catch (HttpRequestException e)
            {
                throw new AirlockApiException(0, "unreachable", $"lost the connection to sandbox {Id} while running a command: {e.Message}", e);
            }

            switch (output)
            {
                case ProcessStdout o when stdout.Decode(o.Data.Span) is { Length: > 0 } text:
                    yield return new CommandStdout(text);
                    break;
                case ProcessStderr e when stderr.Decode(e.Data.Span) is { Length: > 0 } text:
                    yield return new CommandStderr(text);
                    break;
                case ProcessExited x:
                    if (stdout.Flush() is { Length: > 0 } restOut)
                    {
                        yield return new CommandStdout(restOut);
                    }

                    if (stderr.Flush() is { Length: > 0 } restErr)
                    {
                        yield return new CommandStderr(restErr);
                    }

                    exited = true;
                    yield return new CommandExit(x.ExitCode, x.Status, x.Error);
                    break;
            }

            if (exited)
            {
                break;
            }
        }

        if (!exited)
        {
            throw new AirlockApiException(HttpStatusCode.BadGateway, "stream_ended", $"the output stream of a command in sandbox {Id} ended before the command exited.");
        }
    }

    /// <summary>Runs <paramref name="command"/> (see <see cref="RunAsync"/>) and collects its output and exit code.</summary>
    public async Task<CommandResult> ExecAsync(string command, RunOptions? options = null, CancellationToken cancellationToken = default)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        await foreach (var output in RunAsync(command, options, cancellationToken).ConfigureAwait(false))
        {
            switch (output)
            {
                case CommandStdout o: stdout.Append(o.Text); break;
                case CommandStderr e: stderr.Append(e.Text); break;
                case CommandExit x: return new CommandResult(x.ExitCode, stdout.ToString(), stderr.ToString(), x.Error);
            }
        }

        throw new AirlockApiException(HttpStatusCode.BadGateway, "stream_ended", "the command's output ended without an exit status.");
    }

    /// <summary>Sets the sandbox's remaining lifetime to <paramref name="seconds"/> from now.</summary>
    public Task SetTimeoutAsync(int seconds, CancellationToken cancellationToken = default) => _client.SetTimeoutAsync(Id, seconds, cancellationToken);

    /// <summary>Kills the sandbox now.</summary>
    public Task KillAsync(CancellationToken cancellationToken = default) => _client.KillAsync(Id, cancellationToken);

    /// <summary>Kills the sandbox unless it was detached; a sandbox that is already gone is not an error here.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0 || Volatile.Read(ref _detached) != 0)
        {
            return;
        }

        try
        {
            await _client.KillAsync(Id).ConfigureAwait(false);
        }
        catch (AirlockApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            // Already killed or timed out.
        }
    }

    internal static EnvdClientOptions CreateEnvdOptions(Uri baseUrl, string sandboxId, string accessToken) => new()
    {
        BaseAddress = baseUrl,
        AccessToken = accessToken,
        // The API key is deliberately not sent on envd routes: they end at the agent inside the sandbox.
        Headers = new Dictionary<string, string>
        {
            ["E2b-Sandbox-Id"] = sandboxId,
            ["E2b-Sandbox-Port"] = "49983",
        },
    };

    internal AirlockApiException Translate(EnvdException e) =>
        new((HttpStatusCode)e.HttpStatus, e.Code, $"sandbox {Id}: {e.Message}", e);

    /// <summary>Decodes a UTF-8 byte stream chunk by chunk, holding back a character split across chunks.</summary>
    private sealed class Utf8Chunks
    {
        private readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();

        public string Decode(ReadOnlySpan<byte> bytes)
        {
            if (bytes.IsEmpty)
            {
                return "";
            }

            var chars = new char[_decoder.GetCharCount(bytes, flush: false)];
            var n = _decoder.GetChars(bytes, chars, flush: false);
            return new string(chars, 0, n);
        }

        public string Flush()
        {
            var chars = new char[8];
            var n = _decoder.GetChars(ReadOnlySpan<byte>.Empty, chars, flush: true);
            return new string(chars, 0, n);
        }
    }
}
