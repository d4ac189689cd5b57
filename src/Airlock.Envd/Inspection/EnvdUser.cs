using System.Text;

namespace Airlock.Envd.Inspection;

/// <summary>
/// The user an envd request acts as, decoded exactly as the guest agent does: E2B's SDKs send
/// <c>Authorization: Basic base64("&lt;user&gt;:")</c> only when the caller names a user (envd 0.4.0 and later),
/// so no header, another scheme or an empty name means the agent's default user.
/// </summary>
public static class EnvdUser
{
    /// <summary>The user commands run as when a request names none (E2B's default, and the agent's <c>--default-user</c>).</summary>
    public const string Default = "user";

    /// <summary>
    /// Reads the user from an <c>Authorization</c> header value. False only for Basic credentials that are not valid
    /// base64 (the agent refuses those as unauthenticated, so nothing runs).
    /// </summary>
    public static bool TryRead(string? authorization, out string user)
    {
        var valid = TryReadNamed(authorization, out var named);
        user = string.IsNullOrEmpty(named) ? Default : named;
        return valid;
    }

    /// <summary>
    /// The user a request names, or null when it names none (the guest then applies its own default user). False only
    /// for Basic credentials that are not valid base64.
    /// </summary>
    public static bool TryReadNamed(string? authorization, out string? user)
    {
        user = null;
        if (authorization is null || !authorization.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        string decoded;
        try
        {
            decoded = Encoding.UTF8.GetString(Convert.FromBase64String(authorization[6..].Trim()));
        }
        catch (FormatException)
        {
            return false;
        }

        var colon = decoded.IndexOf(':', StringComparison.Ordinal);
        user = colon < 0 ? decoded : decoded[..colon];
        return true;
    }
}
