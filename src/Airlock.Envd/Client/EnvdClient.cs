using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;

namespace Airlock.Envd.Client;

/// <summary>A client of the envd protocol: processes and files in one sandbox.</summary>
public sealed class EnvdClient(HttpClient http, EnvdClientOptions options)
{
    private readonly bool _binary = options.UseBinaryFormat;

    /// <summary>Starts a process and streams its events until it ends (or the token is cancelled; the process keeps running).</summary>
    public async IAsyncEnumerable<ProcessOutput> StartAsync(ProcessSpec spec, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var config = new ProcessConfig { Cmd = spec.Command };
        config.Args.AddRange(spec.Args);
        if (spec.Cwd is not null)
        {
            config.Cwd = spec.Cwd;
        }

        if (spec.Env is not null)
        {
            foreach (var (name, value) in spec.Env)
            {
                config.Envs[name] = value;
            }
        }

        var request = new StartRequest { Process = config, Stdin = spec.Stdin };
        if (spec.Tag is not null)
        {
            request.Tag = spec.Tag;
        }

        await foreach (var message in ServerStreamAsync($"{EnvdProtocol.ProcessService}/Start", request, StartResponse.Parser, spec.User, cancellationToken).ConfigureAwait(false))
        {
            if (Map(message.Event) is { } output)
            {
                yield return output;
            }
        }
    }

    /// <summary>Re-attaches to a running process's output.</summary>
    public async IAsyncEnumerable<ProcessOutput> ConnectAsync(uint pid, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var request = new ConnectRequest { Process = new ProcessSelector { Pid = pid } };
        await foreach (var message in ServerStreamAsync($"{EnvdProtocol.ProcessService}/Connect", request, ConnectResponse.Parser, null, cancellationToken).ConfigureAwait(false))
        {
            if (Map(message.Event) is { } output)
            {
                yield return output;
            }
        }
    }

    public async Task<IReadOnlyList<ProcessSummary>> ListAsync(CancellationToken cancellationToken)
    {
        var response = await UnaryAsync($"{EnvdProtocol.ProcessService}/List", new ListRequest(), ListResponse.Parser, cancellationToken).ConfigureAwait(false);
        return response.Processes
            .Select(p => new ProcessSummary(p.Pid, p.Config?.Cmd ?? string.Empty, [.. p.Config?.Args ?? []], p.HasTag ? p.Tag : null))
            .ToList();
    }

    /// <summary>Airlock's agent service: hands a restored or resumed guest its identity; returns the guest kernel release.</summary>
    public async Task<string> SetIdentityAsync(Protocol.Agent.SetIdentityRequest request, CancellationToken cancellationToken)
    {
        var response = await UnaryAsync($"{EnvdProtocol.AgentService}/SetIdentity", request, Protocol.Agent.SetIdentityResponse.Parser, cancellationToken).ConfigureAwait(false);
        return response.Kernel;
    }

    public Task SendInputAsync(uint pid, ReadOnlyMemory<byte> stdin, CancellationToken cancellationToken) =>
        UnaryAsync(
            $"{EnvdProtocol.ProcessService}/SendInput",
            new SendInputRequest { Process = new ProcessSelector { Pid = pid }, Input = new ProcessInput { Stdin = ByteString.CopyFrom(stdin.Span) } },
            SendInputResponse.Parser,
            cancellationToken);

    public Task SendSignalAsync(uint pid, int signal, CancellationToken cancellationToken) =>
        UnaryAsync(
            $"{EnvdProtocol.ProcessService}/SendSignal",
            new SendSignalRequest { Process = new ProcessSelector { Pid = pid }, Signal = (Signal)signal },
            SendSignalResponse.Parser,
            cancellationToken);

    public Task CloseStdinAsync(uint pid, CancellationToken cancellationToken) =>
        UnaryAsync(
            $"{EnvdProtocol.ProcessService}/CloseStdin",
            new CloseStdinRequest { Process = new ProcessSelector { Pid = pid } },
            CloseStdinResponse.Parser,
            cancellationToken);

    public async Task<FileEntry> StatAsync(string path, CancellationToken cancellationToken)
    {
        var response = await UnaryAsync($"{EnvdProtocol.FilesystemService}/Stat", new StatRequest { Path = path }, StatResponse.Parser, cancellationToken).ConfigureAwait(false);
        return Map(response.Entry);
    }

    public async Task<IReadOnlyList<FileEntry>> ListDirAsync(string path, int depth, CancellationToken cancellationToken)
    {
        var response = await UnaryAsync(
            $"{EnvdProtocol.FilesystemService}/ListDir",
            new ListDirRequest { Path = path, Depth = (uint)Math.Max(1, depth) },
            ListDirResponse.Parser,
            cancellationToken).ConfigureAwait(false);
        return response.Entries.Select(Map).ToList();
    }

    public async Task<FileEntry> MakeDirAsync(string path, CancellationToken cancellationToken)
    {
        var response = await UnaryAsync($"{EnvdProtocol.FilesystemService}/MakeDir", new MakeDirRequest { Path = path }, MakeDirResponse.Parser, cancellationToken).ConfigureAwait(false);
        return Map(response.Entry);
    }

    public async Task<FileEntry> MoveAsync(string source, string destination, CancellationToken cancellationToken)
    {
        var response = await UnaryAsync(
            $"{EnvdProtocol.FilesystemService}/Move",
            new MoveRequest { Source = source, Destination = destination },
            MoveResponse.Parser,
            cancellationToken).ConfigureAwait(false);
        return Map(response.Entry);
    }

    public Task RemoveAsync(string path, CancellationToken cancellationToken) =>
        UnaryAsync($"{EnvdProtocol.FilesystemService}/Remove", new RemoveRequest { Path = path }, RemoveResponse.Parser, cancellationToken);

    /// <summary>Writes a file (parents are created) with <c>POST /files</c> as an octet stream.</summary>
    public async Task WriteFileAsync(string path, Stream content, CancellationToken cancellationToken)
    {
        using var request = NewRequest(HttpMethod.Post, FilesUri(path));
        var body = new StreamContent(content);
        body.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        request.Content = body;
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await EnsureSuccessAsync(response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads a file with <c>GET /files</c>; the caller disposes the stream.</summary>
    public async Task<Stream> ReadFileAsync(string path, CancellationToken cancellationToken)
    {
        using var request = NewRequest(HttpMethod.Get, FilesUri(path));
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        try
        {
            await EnsureSuccessAsync(response, cancellationToken).ConfigureAwait(false);
            return new ResponseStream(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), response);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>True when the agent answers <c>GET /health</c>.</summary>
    public async Task<bool> HealthAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var request = NewRequest(HttpMethod.Get, new Uri(options.BaseAddress, "health"));
            using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            return response.IsSuccessStatusCode;
        }
        catch (HttpRequestException)
        {
            return false;
        }
    }

    private Uri FilesUri(string path) => new(options.BaseAddress, $"files?path={Uri.EscapeDataString(path)}");

    private HttpRequestMessage NewRequest(HttpMethod method, Uri uri)
    {
        var request = new HttpRequestMessage(method, uri);
        if (options.AccessToken is not null)
        {
            request.Headers.TryAddWithoutValidation(EnvdProtocol.AccessTokenHeader, options.AccessToken);
        }

        foreach (var (name, value) in options.Headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        return request;
    }

    private async Task<TResponse> UnaryAsync<TResponse>(string route, IMessage request, MessageParser<TResponse> parser, CancellationToken cancellationToken)
        where TResponse : IMessage<TResponse>, new()
    {
        using var message = NewRequest(HttpMethod.Post, new Uri(options.BaseAddress, route));
        message.Headers.TryAddWithoutValidation("Connect-Protocol-Version", "1");
        var content = new ByteArrayContent(ConnectCodec.Serialize(request, _binary));
        content.Headers.ContentType = new MediaTypeHeaderValue(_binary ? ConnectCodec.UnaryProto : ConnectCodec.UnaryJson);
        message.Content = content;
        using var response = await http.SendAsync(message, cancellationToken).ConfigureAwait(false);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw ToEnvdException(ConnectCodec.ReadError(body, (int)response.StatusCode), (int)response.StatusCode);
        }

        return ConnectCodec.Parse(parser, body, ConnectCodec.IsBinary(response.Content.Headers.ContentType?.MediaType));
    }

    private async IAsyncEnumerable<TResponse> ServerStreamAsync<TResponse>(
        string route,
        IMessage request,
        MessageParser<TResponse> parser,
        string? user,
        [EnumeratorCancellation] CancellationToken cancellationToken)
        where TResponse : IMessage<TResponse>, new()
    {
        using var message = NewRequest(HttpMethod.Post, new Uri(options.BaseAddress, route));
        message.Headers.TryAddWithoutValidation("Connect-Protocol-Version", "1");
        if (user is not null)
        {
            message.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(user + ":")));
        }

        var content = new ByteArrayContent(ConnectCodec.Envelope(0, ConnectCodec.Serialize(request, _binary)));
        content.Headers.ContentType = new MediaTypeHeaderValue(_binary ? ConnectCodec.StreamProto : ConnectCodec.StreamJson);
        message.Content = content;
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            var error = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            throw ToEnvdException(ConnectCodec.ReadError(error, (int)response.StatusCode), (int)response.StatusCode);
        }

        var binary = ConnectCodec.IsBinary(response.Content.Headers.ContentType?.MediaType);
        var reader = new ConnectCodec.EnvelopeReader();
        var buffer = new byte[16 * 1024];
        var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            while (true)
            {
                var read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new EnvdException(ConnectCodes.Unavailable, 503, "the stream ended without an end-of-stream message");
                }

                reader.Append(buffer.AsSpan(0, read));
                while (reader.TryRead(out var flags, out var payload))
                {
                    if ((flags & ConnectCodec.EndStreamFlag) != 0)
                    {
                        if (ConnectCodec.ReadError(payload, null) is { } error)
                        {
                            throw ToEnvdException(error, error.HttpStatus);
                        }

                        yield break;
                    }

                    yield return ConnectCodec.Parse(parser, payload, binary);
                }
            }
        }
    }

    private static EnvdException ToEnvdException(ConnectException? error, int status) =>
        error is null
            ? new EnvdException(ConnectCodes.FromHttpStatus(status), status, $"HTTP {status}")
            : new EnvdException(error.Code, status, error.Message);

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var status = (int)response.StatusCode;
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        var error = ConnectCodec.ReadError(body, status);

        // The /files API answers {code: <http status>, message}; keep the message, derive the code from the status.
        var code = error is null || int.TryParse(error.Code, out _) || error.Code == ConnectCodes.Unknown ? ConnectCodes.FromHttpStatus(status) : error.Code;
        throw new EnvdException(code, status, error?.Message ?? $"HTTP {status}");
    }

    private static ProcessOutput? Map(ProcessEvent? e) => e?.EventCase switch
    {
        ProcessEvent.EventOneofCase.Start => new ProcessStarted(e.Start.Pid),
        ProcessEvent.EventOneofCase.Data when e.Data.OutputCase == ProcessEvent.Types.DataEvent.OutputOneofCase.Stdout => new ProcessStdout(e.Data.Stdout.Memory),
        ProcessEvent.EventOneofCase.Data when e.Data.OutputCase == ProcessEvent.Types.DataEvent.OutputOneofCase.Stderr => new ProcessStderr(e.Data.Stderr.Memory),
        ProcessEvent.EventOneofCase.Data when e.Data.OutputCase == ProcessEvent.Types.DataEvent.OutputOneofCase.Pty => new ProcessStdout(e.Data.Pty.Memory),
        ProcessEvent.EventOneofCase.End => new ProcessExited(e.End.ExitCode, e.End.Status, e.End.HasError ? e.End.Error : null),
        _ => null,
    };

    private static FileEntry Map(EntryInfo? entry) => entry is null
        ? throw new EnvdException(ConnectCodes.Internal, 500, "the agent answered without an entry")
        : new FileEntry(
            entry.Name,
            entry.Path,
            entry.Type switch { FileType.Directory => "dir", FileType.Symlink => "symlink", _ => "file" },
            entry.Size,
            entry.HasSymlinkTarget ? entry.SymlinkTarget : null);

    /// <summary>Keeps the response alive until the body stream is disposed.</summary>
    private sealed class ResponseStream(Stream inner, HttpResponseMessage response) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => inner.ReadAsync(buffer, offset, count, cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
                response.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
