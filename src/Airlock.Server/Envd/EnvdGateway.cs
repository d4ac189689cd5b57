using System.Text.Json;
using Airlock.Core.Auditing;
using Airlock.Envd;
using Airlock.Envd.Inspection;
using Airlock.Server.Api;
using Airlock.Server.Auth;
using Airlock.Sandboxes;
using Airlock.Sandboxes.Agent;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;
using Yarp.ReverseProxy.Forwarder;

namespace Airlock.Server.Envd;

/// <summary>
/// Routes envd traffic (<c>&lt;port&gt;-&lt;id&gt;.&lt;domain&gt;</c> or <c>E2b-Sandbox-Id</c>/<c>E2b-Sandbox-Port</c>) to a
/// sandbox's agent over its namespace link, after checking the sandbox's access token.
/// </summary>
/// <remarks>
/// This is the one place every process start and file write passes through: it records them in the audit chain
/// (and is where policy gates go). Bodies are forwarded unchanged.
/// <code>
/// match ─ sandbox running? ─ port allowed? ─ token ok? ─ inspect (Start argv,user | upload path,size,sha256) ─ forward (YARP)
///         (no: 502, as E2B)    (signed /files: the agent checks the signature)
///       ─ record (process.start / process.exit from the response stream / file.write on 2xx)
/// </code>
/// The answer for a sandbox that is not running is E2B's edge answer, status 502 with
/// <c>{"sandboxId","message","code":502}</c>: the SDKs' <c>isRunning()</c> is <c>GET /health</c> and returns false only for 502
/// (docs/e2b-compat.md).
/// </remarks>
internal sealed class EnvdGateway(SandboxLifecycle manager, SandboxConnector connector, IHttpForwarder forwarder, AirlockServerOptions options)
{
    private readonly TransferLimiter _transfers = new(options.MaxFileTransfersPerSandbox);

    private const int MaxStartBody = 1 << 20;
    private static readonly ForwarderRequestConfig ForwardConfig = new() { ActivityTimeout = TimeSpan.FromMinutes(15), AllowResponseBuffering = false };

    public static bool TryMatch(HttpRequest request, string domain, out string sandboxId, out int port)
    {
        sandboxId = "";
        port = 0;
        var idHeader = request.Headers["E2b-Sandbox-Id"].ToString();
        if (idHeader.Length > 0)
        {
            sandboxId = idHeader.Trim();
            return int.TryParse(request.Headers["E2b-Sandbox-Port"].ToString(), out port) || (port = -1) < 0;
        }

        // Host form: <port>-<sandboxId>.<domain>
        var host = request.Host.Host;
        var suffix = "." + domain;
        if (!host.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var label = host[..^suffix.Length];
        var dash = label.IndexOf('-', StringComparison.Ordinal);
        if (dash <= 0 || label.Contains('.', StringComparison.Ordinal) || !int.TryParse(label.AsSpan(0, dash), out port))
        {
            return false;
        }

        sandboxId = label[(dash + 1)..];
        return true;
    }

    /// <summary>
    /// A signed <c>/files</c> URL with no sandbox in its host or headers (the SDK builds it on <c>E2B_SANDBOX_URL</c>):
    /// routed to the sandbox whose token signed it. Expiry and the rest are checked again by the agent.
    /// </summary>
    public static bool TryMatchSigned(HttpRequest request, SandboxLifecycle lifecycle, out string sandboxId)
    {
        sandboxId = "";
        var query = request.Query;
        if (request.Path != "/files" || !(HttpMethods.IsGet(request.Method) || HttpMethods.IsPost(request.Method))
            || query["signature"].ToString() is not { Length: > 3 } signature || query["signature"].Count != 1)
        {
            return false;
        }

        long? expiration = long.TryParse(query["signature_expiration"].ToString(), out var seconds) ? seconds : null;
        var operation = HttpMethods.IsGet(request.Method) ? "read" : "write";
        var path = query["path"].ToString();
        var user = query["username"].ToString();
        sandboxId = lifecycle.FindSigner(token => EnvdSignatures.Matches(token, signature, path, operation, user, expiration)) ?? "";
        return sandboxId.Length > 0;
    }

    public async Task HandleAsync(HttpContext context, string sandboxId, int port)
    {
        if (port is < 1 or > 65535)
        {
            await ApiProblem.WriteAsync(context, 400, "invalid_port", "E2b-Sandbox-Port must be a port number.");
            return;
        }

        if (!SandboxIds.Valid(sandboxId) || !manager.TryGetServing(sandboxId, out var serving))
        {
            await WriteSandboxNotFoundAsync(context, sandboxId);
            return;
        }

        if (port != EnvdProtocol.Port)
        {
            await ApiProblem.WriteAsync(context, 502, "port_not_exposed", $"Port {port} of sandbox {sandboxId} is not reachable: only the guest agent (port {EnvdProtocol.Port}) is routed in this version.");
            return;
        }

        var path = context.Request.Path.Value ?? "";
        var method = context.Request.Method;

        // Only the agent's health answer is public, as in envd: it says nothing but "up". A signed file URL carries no
        // token by design (it is handed to someone else); the agent verifies its signature against the token, so it
        // passes here and is refused there when the signature is wrong or expired.
        var isHealth = HttpMethods.IsGet(method) && path == "/health";
        var isSignedFileUrl = IsSignedFileUrl(context.Request);
        if (!isHealth && !isSignedFileUrl && !ApiKeys.Matches(context.Request.Headers[EnvdProtocol.AccessTokenHeader].ToString(), serving.AccessTokenHash))
        {
            await ApiProblem.WriteAsync(context, 401, "invalid_access_token", $"Missing or wrong X-Access-Token for sandbox {sandboxId}.");
            return;
        }
        if (path.Contains(EnvdProtocol.AgentService, StringComparison.OrdinalIgnoreCase))
        {
            // The agent-administration service is airlockd's alone (identity, clock, token); never forwarded.
            await ApiProblem.WriteAsync(context, 404, "not_found", $"No route {method} {path}.");
            return;
        }

        if (FirstUnsendableHeader(context.Request.Headers) is { } header)
        {
            // HttpClient (under YARP) refuses to send these, which would surface as the agent being unreachable.
            await ApiProblem.WriteAsync(context, 400, "invalid_header", $"Header '{Uri.EscapeDataString(header)}' has a value that is not printable ASCII.");
            return;
        }

        var observeProcess = false;
        ObservedUpload? upload = null;
        using var transfer = path == "/files" ? _transfers.TryEnter(sandboxId) : null;
        if (path == "/files" && transfer is null)
        {
            context.Response.Headers.RetryAfter = "1";
            await ApiProblem.WriteAsync(context, 429, "too_many_transfers", $"Sandbox {sandboxId} has {_transfers.Limit} file transfers in flight already (the limit); retry when one ends.");
            return;
        }

        if (HttpMethods.IsPost(method) && path == "/process.Process/Start")
        {
            var summary = await InspectStartAsync(context);
            if (summary is null)
            {
                await ApiProblem.WriteAsync(context, 400, "invalid_argument", "process start request could not be read.");
                return;
            }

            // The user is in the Authorization header, not in the message; the agent reads it the same way.
            if (!EnvdUser.TryRead(context.Request.Headers.Authorization.ToString(), out var user))
            {
                await ApiProblem.WriteAsync(context, 401, "invalid_authorization", "The Authorization header is not valid Basic credentials (base64 of \"<user>:\").");
                return;
            }

            await manager.AuditAsync(AuditKinds.ProcessStart, serving, AuditJson.Object(
                ("command", summary.Command),
                ("args", summary.Args),
                ("cwd", summary.Cwd),
                ("user", user),
                ("envNames", summary.EnvNames)), context.RequestAborted);
            observeProcess = true;
        }
        else if (HttpMethods.IsPost(method) && path == "/files")
        {
            upload = await ObserveUploadAsync(context);
            if (upload is null)
            {
                return; // error already written
            }
        }

        var originalBody = context.Response.Body;
        ObservingStream? observing = null;
        if (observeProcess)
        {
            observing = new ObservingStream(originalBody, context);
            context.Response.Body = observing;
        }

        ForwarderError error;
        IReadOnlyList<UploadedFile> uploads = [];
        using var inFlight = manager.EnterActivity(sandboxId); // a timeout pause lets this request finish first
        try
        {
            error = await forwarder.SendAsync(context, SandboxConnector.BaseUri(sandboxId, port).ToString(), connector.Invoker, ForwardConfig, HttpTransformer.Default);
        }
        finally
        {
            context.Response.Body = originalBody;
            if (upload is not null)
            {
                uploads = await upload.FilesAsync(); // always: it ends the multipart observer's task
                await upload.DisposeAsync();
            }
        }

        if (upload is { TooLarge: true } && !context.Response.HasStarted)
        {
            await ApiProblem.WriteAsync(context, 413, "body_too_large", $"Upload exceeds the limit of {options.MaxUploadBytes} bytes.");
            return;
        }

        // The client's own failures (gone away, a body it could not send) are not the agent's: YARP answered them already.
        if (error is not (ForwarderError.None or ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled or ForwarderError.RequestBodyClient
            or ForwarderError.ResponseBodyCanceled or ForwarderError.ResponseBodyClient) && !context.Response.HasStarted)
        {
            await ApiProblem.WriteAsync(context, 502, "sandbox_unreachable", $"Sandbox {sandboxId}'s agent did not answer ({error}).");
        }

        if (observing?.Observer is { } observer && (observer.Pid is not null || observer.Ended))
        {
            await manager.AuditAsync(AuditKinds.ProcessExit, serving, AuditJson.Object(
                ("pid", observer.Pid),
                ("exitCode", observer.ExitCode),
                ("status", observer.Ended ? observer.Status : "stream closed before the process ended")), CancellationToken.None);
        }

        if (upload is not null && context.Response.StatusCode is >= 200 and < 300 && error == ForwarderError.None)
        {
            foreach (var file in uploads)
            {
                await manager.AuditAsync(AuditKinds.FileWrite, serving, AuditJson.Object(
                    ("path", file.Path), ("size", file.Size), ("sha256", file.Sha256), ("signedUrl", isSignedFileUrl)), CancellationToken.None);
            }
        }
    }

    /// <summary>The first header whose value holds anything but printable ASCII and tabs (RFC 9110 field-value as sent).</summary>
    private static string? FirstUnsendableHeader(IHeaderDictionary headers)
    {
        foreach (var (name, values) in headers)
        {
            foreach (var value in values)
            {
                if (value is not null && value.AsSpan().ContainsAnyExcept(PrintableAscii))
                {
                    return name;
                }
            }
        }

        return null;
    }

    private static readonly System.Buffers.SearchValues<char> PrintableAscii =
        System.Buffers.SearchValues.Create("\t !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");

    /// <summary>A <c>GET</c> or <c>POST /files</c> that carries E2B's URL signature (<c>signature=v1_…</c>) instead of a token.</summary>
    private static bool IsSignedFileUrl(HttpRequest request) =>
        (HttpMethods.IsGet(request.Method) || HttpMethods.IsPost(request.Method))
        && request.Path == "/files"
        && request.Query["signature"].ToString().Length > 0;

    /// <summary>
    /// E2B's edge answer for a sandbox it cannot route to (killed, timed out, paused, unknown): 502 and
    /// <c>{"sandboxId": "…", "message": "The sandbox was not found", "code": 502}</c>. The SDKs map 502 to "not running".
    /// </summary>
    private static async Task WriteSandboxNotFoundAsync(HttpContext context, string sandboxId)
    {
        context.Response.StatusCode = StatusCodes.Status502BadGateway;
        context.Response.ContentType = "application/json; charset=utf-8";
        await using (var json = new Utf8JsonWriter(context.Response.Body))
        {
            json.WriteStartObject();
            json.WriteString("sandboxId", sandboxId);
            json.WriteString("message", "The sandbox was not found");
            json.WriteNumber("code", StatusCodes.Status502BadGateway);
            json.WriteEndObject();
        }
    }

    /// <summary>Reads a process start (at most 1 MiB) into memory to inspect it, then hands the forwarder that copy.</summary>
    private static async Task<StartRequestSummary?> InspectStartAsync(HttpContext context)
    {
        var request = context.Request;
        if (request.ContentLength > MaxStartBody)
        {
            return null;
        }

        // Into memory, never a spool file: ASP.NET's request buffering would write past 30 KiB to the host's temp dir.
        var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + read > MaxStartBody)
            {
                return null;
            }

            buffer.Write(chunk, 0, read);
        }

        buffer.Position = 0;
        request.Body = buffer;
        context.Response.RegisterForDispose(buffer);
        return EnvdInspector.TryReadStartRequest(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), request.ContentType, out var summary) ? summary : null;
    }

    /// <summary>
    /// Sets up an upload to stream through <see cref="ObservedUpload"/> (nothing read yet), or writes the refusal: a
    /// declared length past the limit (413) or multipart without a boundary (400).
    /// </summary>
    private async Task<ObservedUpload?> ObserveUploadAsync(HttpContext context)
    {
        var request = context.Request;
        var limit = options.MaxUploadBytes;
        if (request.ContentLength > limit)
        {
            await ApiProblem.WriteAsync(context, 413, "body_too_large", $"Upload is {request.ContentLength} bytes; the limit is {limit}.");
            return null;
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } sizeFeature)
        {
            sizeFeature.MaxRequestBodySize = limit;
        }

        string? boundary = null;
        if (MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType) && mediaType.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
        {
            boundary = HeaderUtilities.RemoveQuotes(mediaType.Boundary).Value;
            if (string.IsNullOrEmpty(boundary))
            {
                await ApiProblem.WriteAsync(context, 400, "invalid_multipart", "multipart/form-data without a boundary.");
                return null;
            }
        }

        var upload = new ObservedUpload(request.Body, request.Query["path"].ToString(), boundary, limit);
        request.Body = upload;
        return upload;
    }

    /// <summary>Passes response bytes through unchanged while feeding them to the process stream observer.</summary>
    private sealed class ObservingStream(Stream inner, HttpContext context) : Stream
    {
        /// <summary>Created at the first response byte, when the response content type (codec) is known.</summary>
        public ProcessStreamObserver? Observer { get; private set; }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        private void Observe(ReadOnlySpan<byte> data)
        {
            Observer ??= new ProcessStreamObserver(context.Response.ContentType);
            Observer.Feed(data);
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            Observe(buffer.AsSpan(offset, count));
            inner.Write(buffer, offset, count);
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Observe(buffer.Span);
            await inner.WriteAsync(buffer, cancellationToken);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
