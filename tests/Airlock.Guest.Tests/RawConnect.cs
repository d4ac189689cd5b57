using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;
using Google.Protobuf;

namespace Airlock.Guest.Tests;

/// <summary>
/// Connect calls to the agent with the protocol's messages as they are on the wire (the typed <see cref="EnvdClient"/>
/// hides which oneof case carried the output, which the PTY and watcher tests assert).
/// </summary>
internal sealed class RawConnect(AgentFixture agent, bool binary = false, string? user = null)
{
    public async Task<TResponse> UnaryAsync<TResponse>(string route, IMessage request, MessageParser<TResponse> parser, CancellationToken cancellationToken)
        where TResponse : IMessage<TResponse>, new()
    {
        using var message = NewRequest(route);
        message.Content = new ByteArrayContent(ConnectCodec.Serialize(request, binary));
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(binary ? ConnectCodec.UnaryProto : ConnectCodec.UnaryJson);
        using var response = await agent.Http.SendAsync(message, cancellationToken);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            var error = ConnectCodec.ReadError(body, (int)response.StatusCode)!;
            throw new EnvdException(error.Code, (int)response.StatusCode, error.Message);
        }

        return ConnectCodec.Parse(parser, body, binary);
    }

    /// <summary>A server stream; an error in the end-of-stream message is thrown as <see cref="EnvdException"/>.</summary>
    public async IAsyncEnumerable<TResponse> StreamAsync<TResponse>(
        string route,
        IMessage request,
        MessageParser<TResponse> parser,
        [EnumeratorCancellation] CancellationToken cancellationToken,
        int keepaliveSeconds = 0)
        where TResponse : IMessage<TResponse>, new()
    {
        using var message = NewRequest(route);
        if (keepaliveSeconds > 0)
        {
            message.Headers.Add(EnvdProtocol.KeepaliveHeader, keepaliveSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        message.Content = new ByteArrayContent(ConnectCodec.Envelope(0, ConnectCodec.Serialize(request, binary)));
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(binary ? ConnectCodec.StreamProto : ConnectCodec.StreamJson);
        using var response = await agent.Http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
            var error = ConnectCodec.ReadError(body, (int)response.StatusCode)!;
            throw new EnvdException(error.Code, (int)response.StatusCode, error.Message);
        }

        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        var reader = new ConnectCodec.EnvelopeReader();
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var read = await stream.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                throw new InvalidOperationException("the stream ended without an end-of-stream message");
            }

            reader.Append(buffer.AsSpan(0, read));
            while (reader.TryRead(out var flags, out var payload))
            {
                if ((flags & ConnectCodec.EndStreamFlag) != 0)
                {
                    if (ConnectCodec.ReadError(payload, null) is { } error)
                    {
                        throw new EnvdException(error.Code, error.HttpStatus, error.Message);
                    }

                    yield break;
                }

                yield return ConnectCodec.Parse(parser, payload, binary);
            }
        }
    }

    /// <summary>A client stream: every message enveloped in one request body; answers the response envelopes' message.</summary>
    public async Task<TResponse> ClientStreamAsync<TResponse>(string route, IEnumerable<IMessage> requests, MessageParser<TResponse> parser, CancellationToken cancellationToken)
        where TResponse : IMessage<TResponse>, new()
    {
        using var body = new MemoryStream();
        foreach (var request in requests)
        {
            body.Write(ConnectCodec.Envelope(0, ConnectCodec.Serialize(request, binary)));
        }

        using var message = NewRequest(route);
        message.Content = new ByteArrayContent(body.ToArray());
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(binary ? ConnectCodec.StreamProto : ConnectCodec.StreamJson);
        using var response = await agent.Http.SendAsync(message, cancellationToken);
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            var error = ConnectCodec.ReadError(bytes, (int)response.StatusCode)!;
            throw new EnvdException(error.Code, (int)response.StatusCode, error.Message);
        }

        var reader = new ConnectCodec.EnvelopeReader();
        reader.Append(bytes);
        TResponse? result = default;
        while (reader.TryRead(out var flags, out var payload))
        {
            if ((flags & ConnectCodec.EndStreamFlag) != 0)
            {
                if (ConnectCodec.ReadError(payload, null) is { } error)
                {
                    throw new EnvdException(error.Code, error.HttpStatus, error.Message);
                }

                return result ?? throw new InvalidOperationException("the stream ended without a response message");
            }

            result = ConnectCodec.Parse(parser, payload, binary);
        }

        throw new InvalidOperationException("the response has no end-of-stream message");
    }

    private HttpRequestMessage NewRequest(string route)
    {
        var message = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, route));
        message.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        message.Headers.Add("Connect-Protocol-Version", "1");
        if (user is not null)
        {
            message.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(user + ":")));
        }

        return message;
    }
}
