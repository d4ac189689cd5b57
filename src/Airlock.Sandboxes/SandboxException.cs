namespace Airlock.Sandboxes;

/// <summary>Why a lifecycle operation was refused or failed; the API edge maps each to one HTTP status.</summary>
public enum SandboxErrorKind
{
    /// <summary>The request is malformed or asks for something out of range (400).</summary>
    InvalidArgument,
    /// <summary>No such sandbox or template for this tenant (404).</summary>
    NotFound,
    /// <summary>The sandbox is in a state that does not allow this now: paused, pausing, ending (409).</summary>
    Conflict,
    /// <summary>The tenant's quota would be exceeded (429).</summary>
    QuotaExceeded,
    /// <summary>This host cannot offer what was asked (a boundary, keeping memory) (422).</summary>
    Unavailable,
    /// <summary>The disk is full: the operation was not done and nothing was lost (507).</summary>
    InsufficientStorage,
    /// <summary>The operation failed for a reason the caller cannot fix (500).</summary>
    Internal,
}

/// <summary>An expected failure of a lifecycle operation: a kind, a stable code and a message for people.</summary>
public sealed class SandboxException : Exception
{
    public SandboxException(SandboxErrorKind kind, string code, string message)
        : base(message)
    {
        Kind = kind;
        Code = code;
    }

    public SandboxException(SandboxErrorKind kind, string code, string message, Exception inner)
        : base(message, inner)
    {
        Kind = kind;
        Code = code;
    }

    public SandboxException()
        : this(SandboxErrorKind.Internal, "internal", "lifecycle error")
    {
    }

    public SandboxException(string message)
        : this(SandboxErrorKind.Internal, "internal", message)
    {
    }

    public SandboxException(string message, Exception innerException)
        : this(SandboxErrorKind.Internal, "internal", message, innerException)
    {
    }

    public SandboxErrorKind Kind { get; }

    /// <summary>Stable machine-readable code (<c>sandbox_not_found</c>, <c>quota_exceeded</c>, ...).</summary>
    public string Code { get; }

    public static SandboxException Invalid(string code, string message) => new(SandboxErrorKind.InvalidArgument, code, message);

    public static SandboxException NotFound(string code, string message) => new(SandboxErrorKind.NotFound, code, message);

    public static SandboxException Conflict(string code, string message) => new(SandboxErrorKind.Conflict, code, message);

    public static SandboxException Quota(string code, string message) => new(SandboxErrorKind.QuotaExceeded, code, message);
}
