using Airlock.Envd;
using Airlock.Envd.Connect;
using Google.Protobuf;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Net.Http.Headers;

namespace Airlock.Guest;

/// <summary>
/// The server half of the Connect protocol for the agent's handlers: unary calls (one message in, one out) and
/// server streams (one enveloped message in, envelopes out, an end-of-stream envelope last).
/// </summary>
internal static class ConnectRpc
{
    public static async Task UnaryAsync<TRequest>(
        HttpContext context,
        MessageParser<TRequest> parser,
        Func<TRequest, CancellationToken, ValueTask<IMessage>> handler)
        where TRequest : IMessage<TRequest>, new()
    {
        var contentType = context.Request.ContentType;
        if (!ConnectCodec.IsConnect(contentType) || ConnectCodec.IsStreaming(contentType))
        {
            await WriteUnsupportedAsync(context, "application/json or application/proto");
            return;
        }

        var binary = ConnectCodec.IsBinary(contentType);
        try
        {
            var body = await ReadBodyAsync(context.Request, context.RequestAborted);
            var request = ConnectCodec.Parse(parser, body, binary);
            var response = await handler(request, context.RequestAborted);
            context.Response.StatusCode = StatusCodes.Status200OK;
            context.Response.ContentType = binary ? ConnectCodec.UnaryProto : ConnectCodec.UnaryJson;
            await context.Response.Body.WriteAsync(ConnectCodec.Serialize(response, binary), context.RequestAborted);
        }
        catch (ConnectException e)
        {
            await WriteErrorAsync(context, e);
        }
    }

    public static async Task StreamAsync<TRequest>(
        HttpContext context,
        MessageParser<TRequest> parser,
        Func<TRequest, ConnectStream, CancellationToken, Task> handler)
        where TRequest : IMessage<TRequest>, new()
    {
        var contentType = context.Request.ContentType;
        if (!ConnectCodec.IsStreaming(contentType))
        {
            await WriteUnsupportedAsync(context, "application/connect+json or application/connect+proto");
            return;
        }

        var binary = ConnectCodec.IsBinary(contentType);
        var stream = new ConnectStream(context.Response, binary);
        using var deadline = Deadline(context);
        try
        {
            var body = await ReadBodyAsync(context.Request, context.RequestAborted);
            var envelopes = new ConnectCodec.EnvelopeReader();
            envelopes.Append(body);
            if (!envelopes.TryRead(out var flags, out var payload) || (flags & ConnectCodec.EndStreamFlag) != 0 || envelopes.Buffered != 0)
            {
                throw new ConnectException(ConnectCodes.InvalidArgument, "a server-streaming call takes exactly one enveloped request message");
            }

            if ((flags & ConnectCodec.CompressedFlag) != 0)
            {
                throw new ConnectException(ConnectCodes.Unimplemented, "compressed messages are not supported");
            }

            var request = ConnectCodec.Parse(parser, payload, binary);
            await handler(request, stream, deadline.Token);
            await stream.EndAsync(null, context.RequestAborted);
        }
        catch (Exception e) when (IsStreamEnd(e, context, deadline))
        {
            await EndStreamAsync(e, stream, context);
        }
    }

    /// <summary>
    /// A client stream (Connect's streaming framing both ways): enveloped messages in until the request body ends, each
    /// handled as it arrives with <typeparamref name="TState"/> carried between them; then one response message and
    /// the end-of-stream envelope.
    /// </summary>
    public static async Task ClientStreamAsync<TRequest, TState>(
        HttpContext context,
        MessageParser<TRequest> parser,
        IMessage response,
        Func<TRequest, TState, CancellationToken, Task> handler)
        where TRequest : IMessage<TRequest>, new()
        where TState : new()
    {
        var contentType = context.Request.ContentType;
        if (!ConnectCodec.IsStreaming(contentType))
        {
            await WriteUnsupportedAsync(context, "application/connect+json or application/connect+proto");
            return;
        }

        // An input stream may be quiet for minutes (someone thinking at a terminal): no minimum request data rate.
        if (context.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate)
        {
            rate.MinDataRate = null;
        }

        var binary = ConnectCodec.IsBinary(contentType);
        var stream = new ConnectStream(context.Response, binary);
        using var deadline = Deadline(context);
        try
        {
            var state = new TState();
            var envelopes = new ConnectCodec.EnvelopeReader();
            var chunk = new byte[16 * 1024];
            var ended = false;
            while (!ended)
            {
                var read = await context.Request.Body.ReadAsync(chunk, deadline.Token);
                if (read == 0)
                {
                    break;
                }

                envelopes.Append(chunk.AsSpan(0, read));
                while (!ended && envelopes.TryRead(out var flags, out var payload))
                {
                    ended = (flags & ConnectCodec.EndStreamFlag) != 0;
                    if (ended)
                    {
                        break;
                    }

                    if ((flags & ConnectCodec.CompressedFlag) != 0)
                    {
                        throw new ConnectException(ConnectCodes.Unimplemented, "compressed messages are not supported");
                    }

                    await handler(ConnectCodec.Parse(parser, payload, binary), state, deadline.Token);
                }
            }

            if (!ended && envelopes.Buffered != 0)
            {
                throw new ConnectException(ConnectCodes.InvalidArgument, "the request stream ended inside a message");
            }

            await stream.WriteAsync(response, deadline.Token);
            await stream.EndAsync(null, context.RequestAborted);
        }
        catch (Exception e) when (IsStreamEnd(e, context, deadline))
        {
            await EndStreamAsync(e, stream, context);
        }
        catch (IOException) when (!context.RequestAborted.IsCancellationRequested)
        {
            await stream.EndAsync(new ConnectException(ConnectCodes.InvalidArgument, "the request stream broke off"), context.RequestAborted);
        }
    }

    /// <summary>The call's deadline from <c>Connect-Timeout-Ms</c>, linked to the request's abort.</summary>
    private static CancellationTokenSource Deadline(HttpContext context)
    {
        var deadline = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        if (context.Request.Headers.TryGetValue("Connect-Timeout-Ms", out var timeout)
            && long.TryParse(timeout.ToString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var ms)
            && ms > 0)
        {
            deadline.CancelAfter(TimeSpan.FromMilliseconds(Math.Min(ms, int.MaxValue)));
        }

        return deadline;
    }

    private static bool IsStreamEnd(Exception e, HttpContext context, CancellationTokenSource deadline) =>
        e is ConnectException || (e is OperationCanceledException && (context.RequestAborted.IsCancellationRequested || deadline.IsCancellationRequested));

    /// <summary>Ends a stream with the error that stopped it; a client that went away is told nothing.</summary>
    private static Task EndStreamAsync(Exception e, ConnectStream stream, HttpContext context) => e switch
    {
        ConnectException error => stream.EndAsync(error, context.RequestAborted),
        _ when context.RequestAborted.IsCancellationRequested => Task.CompletedTask,
        _ => stream.EndAsync(new ConnectException(ConnectCodes.DeadlineExceeded, "the call's deadline (Connect-Timeout-Ms) passed"), context.RequestAborted),
    };

    /// <summary>The user a request acts as: <c>Authorization: Basic base64(user:)</c>, as E2B's SDKs send it.</summary>
    public static string? User(HttpContext context) =>
        Airlock.Envd.Inspection.EnvdUser.TryReadNamed(context.Request.Headers.Authorization.ToString(), out var user)
            ? user
            : throw new ConnectException(ConnectCodes.Unauthenticated, "the Authorization header is not valid Basic credentials");

    /// <summary>Keepalive interval the client asked for (E2B's SDKs send <c>Keepalive-Ping-Interval</c> in seconds).</summary>
    public static TimeSpan? KeepaliveInterval(HttpContext context) =>
        context.Request.Headers.TryGetValue(EnvdProtocol.KeepaliveHeader, out var value)
        && int.TryParse(value.ToString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var seconds)
        && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : null;

    public static async Task WriteErrorAsync(HttpContext context, ConnectException error)
    {
        if (context.Response.HasStarted)
        {
            return;
        }

        context.Response.StatusCode = error.HttpStatus;
        context.Response.ContentType = ConnectCodec.UnaryJson;
        await context.Response.Body.WriteAsync(ConnectCodec.ErrorBody(error), context.RequestAborted);
    }

    public static async Task WriteUnsupportedAsync(HttpContext context, string expected)
    {
        context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
        context.Response.ContentType = ConnectCodec.UnaryJson;
        var error = new ConnectException(ConnectCodes.Unknown, $"content type '{context.Request.ContentType}' is not supported here; use {expected}");
        await context.Response.Body.WriteAsync(ConnectCodec.ErrorBody(error), context.RequestAborted);
    }

    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        const int limit = ConnectCodec.MaxMessageBytes + ConnectCodec.EnvelopeHeaderLength;
        if (request.ContentLength > limit)
        {
            throw new ConnectException(ConnectCodes.ResourceExhausted, $"the request body exceeds {limit} bytes");
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                throw new ConnectException(ConnectCodes.ResourceExhausted, $"the request body exceeds {limit} bytes");
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }
}

/// <summary>The response side of one server stream.</summary>
internal sealed class ConnectStream(HttpResponse response, bool binary)
{
    private bool _ended;

    public async Task WriteAsync(IMessage message, CancellationToken cancellationToken)
    {
        Begin();
        await response.Body.WriteAsync(ConnectCodec.Envelope(0, ConnectCodec.Serialize(message, binary)), cancellationToken);
        await response.Body.FlushAsync(cancellationToken);
    }

    public async Task EndAsync(ConnectException? error, CancellationToken cancellationToken)
    {
        if (_ended)
        {
            return;
        }

        _ended = true;
        Begin();
        try
        {
            await response.Body.WriteAsync(ConnectCodec.Envelope(ConnectCodec.EndStreamFlag, ConnectCodec.EndStreamPayload(error)), cancellationToken);
            await response.Body.FlushAsync(cancellationToken);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The client is gone.
        }
    }

    private void Begin()
    {
        if (!response.HasStarted)
        {
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = binary ? ConnectCodec.StreamProto : ConnectCodec.StreamJson;
            response.Headers[HeaderNames.CacheControl] = "no-store";
        }
    }
}
