// holistream client for protocol 1.1 (docs/protocol.md): Unity, Mono and .NET, base class library only.
//
//   var client = new HolistreamClient(new HolistreamOptions { Url = "ws://127.0.0.1:8000", Stream = "alice" });
//   client.Start();                       // connects, says hello, reconnects with back-off
//   HolistreamMessage msg;
//   while (client.TryReceive(out msg)) {  // e.g. in Update(): never blocks
//       var result = msg as HolistreamResult;
//       if (result != null && result.Pose != null) { float x, y, z; result.Point("pose", 0, out x, out y, out z); }
//   }
//
// Conservative C# (no tuples, no pattern matching, no newer BCL types) so that Unity's compiler, Mono's
// mcs and current .NET all build it. One background task owns the socket; messages reach the application
// through a bounded queue (oldest dropped first: a real-time consumer wants the newest).
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Holistream
{
    public enum HolistreamRole { Producer, Subscriber }

    public sealed class HolistreamOptions
    {
        public string Url = "ws://127.0.0.1:8000";         // the server, or a full /ws or /ws/subscribe URL
        public HolistreamRole Role = HolistreamRole.Subscriber;
        public string Stream;                                // subscriber: required; producer: publish under it
        public string Format = "binary";                     // "binary" (float32, compact) or "json"
        public string[] Parts = { "face", "hands", "pose" }; // producer only
        public bool World = true;                            // producer only
        public bool Rig;                                     // ask for the avatar rig with every result
        public double Fps = 15;                              // producer: the rate it intends to send
        public string Token;                                 // bearer token, when the server has one
        public string ClientName = "holistream-csharp/1.1";
        public bool Reconnect = true;
        public double BackoffMinSeconds = 0.5;
        public double BackoffMaxSeconds = 30;
        public int QueueCapacity = 64;
        public double CreditTimeoutSeconds = 5;              // a frame nobody answers frees its credit
    }

    /// <summary>Any message: a <see cref="HolistreamResult"/> or a <see cref="HolistreamEvent"/>.</summary>
    public abstract class HolistreamMessage
    {
        public string Type;
    }

    /// <summary>Every text message that is not a result (ready, stats, error, warning, configured,
    /// stream_started, stream_ended, and types newer than this client), plus two local ones:
    /// "connected" (Json is the ready message) and "disconnected" (Json has "close" and "reason").</summary>
    public sealed class HolistreamEvent : HolistreamMessage
    {
        public Dictionary<string, object> Json;
        public string Code { get { return Json.GetString("code"); } }
        public string Text { get { return Json.GetString("message"); } }
        public bool Fatal { get { object v; return Json.TryGetValue("fatal", out v) && v is bool && (bool)v; } }
        public long? Frame { get { object v; return Json.TryGetValue("frame", out v) && v is double ? (long?)(long)(double)v : null; } }
    }

    public sealed class HolistreamResult : HolistreamMessage
    {
        public static readonly string[] PartNames = {
            "pose", "pose_world", "face", "left_hand", "right_hand", "left_hand_world", "right_hand_world" };
        public static readonly int[] PartPoints = { 33, 33, 478, 21, 21, 21, 21 };
        public static readonly int[] PartStrides = { 5, 3, 3, 3, 3, 3, 3 };
        public static readonly string[] Pipelines = { "holistic", "face", "pose", "hands", "holistic_lite" };

        public uint Frame, Seq, Dropped;
        public double Ts;
        public int Width, Height;
        public string Pipeline;
        /// <summary>Flat arrays (points x stride), indexed like PartNames; null = not found or not asked for.</summary>
        public readonly float[][] Parts = new float[7][];
        public float QueueMs, DecodeMs, InferenceMs, TotalMs;
        public HolistreamRig Rig;

        public float[] Pose { get { return Parts[0]; } }
        public float[] PoseWorld { get { return Parts[1]; } }
        public float[] Face { get { return Parts[2]; } }
        public float[] LeftHand { get { return Parts[3]; } }
        public float[] RightHand { get { return Parts[4]; } }
        public float[] LeftHandWorld { get { return Parts[5]; } }
        public float[] RightHandWorld { get { return Parts[6]; } }

        public static int PartIndex(string name) { return Array.IndexOf(PartNames, name); }

        public float[] Part(string name)
        {
            int i = PartIndex(name);
            return i < 0 ? null : Parts[i];
        }

        /// <summary>x, y, z of one point of a part; false when the part is absent.</summary>
        public bool Point(string part, int index, out float x, out float y, out float z)
        {
            int i = PartIndex(part);
            float[] values = i < 0 ? null : Parts[i];
            x = y = z = 0;
            if (values == null || index < 0 || index >= PartPoints[i]) return false;
            int o = index * PartStrides[i];
            x = values[o]; y = values[o + 1]; z = values[o + 2];
            return true;
        }

        /// <summary>A binary result (HSR2: little-endian header, float32 values), docs/protocol.md.</summary>
        public static HolistreamResult FromBinary(byte[] data, int length)
        {
            if (length < 48 || data[0] != 'H' || data[1] != 'S' || data[2] != 'R' || data[3] != '2')
                throw new InvalidDataException("not an HSR2 binary result");
            var r = new HolistreamResult { Type = "result" };
            int headerLength = Le.U16(data, 4), flags = Le.U16(data, 6);
            r.Frame = Le.U32(data, 8); r.Seq = Le.U32(data, 12); r.Ts = Le.F64(data, 16);
            r.Dropped = Le.U32(data, 24); r.Width = Le.U16(data, 28); r.Height = Le.U16(data, 30);
            r.QueueMs = Le.F32(data, 32); r.DecodeMs = Le.F32(data, 36);
            r.InferenceMs = Le.F32(data, 40); r.TotalMs = Le.F32(data, 44);
            int pipeline = (flags >> 12) & 0xF;
            r.Pipeline = pipeline < Pipelines.Length ? Pipelines[pipeline] : "unknown";
            int offset = headerLength;
            for (int bit = 0; bit < PartNames.Length; bit++)
            {
                if ((flags & (1 << bit)) == 0) continue;
                int count = PartPoints[bit] * PartStrides[bit];
                r.Parts[bit] = Le.F32Array(data, offset, count, length);
                offset += count * 4;
            }
            if ((flags & (1 << 8)) != 0)
            {
                int bones = Le.U16(data, offset), expressions = Le.U16(data, offset + 2);
                offset += 4;
                var rig = new HolistreamRig();
                rig.Bones = Le.F32Array(data, offset, bones * 4, length); offset += bones * 16;
                rig.Hips = Le.F32Array(data, offset, 3, length); offset += 12;
                rig.Head = Le.F32Array(data, offset, 3, length); offset += 12;
                rig.Expressions = Le.F32Array(data, offset, expressions, length); offset += expressions * 4;
                rig.Confidence = Le.F32Array(data, offset, 8, length);
                r.Rig = rig;
            }
            return r;
        }

        /// <summary>A JSON result (format json), already parsed.</summary>
        public static HolistreamResult FromJson(Dictionary<string, object> json)
        {
            var r = new HolistreamResult { Type = "result" };
            r.Frame = (uint)json.GetNumber("frame"); r.Seq = (uint)json.GetNumber("seq");
            r.Ts = json.GetNumber("ts"); r.Dropped = (uint)json.GetNumber("dropped");
            r.Width = (int)json.GetNumber("width"); r.Height = (int)json.GetNumber("height");
            r.Pipeline = json.GetString("pipeline");
            for (int i = 0; i < PartNames.Length; i++)
            {
                object v;
                if (json.TryGetValue(PartNames[i], out v) && v is List<object>) r.Parts[i] = Floats((List<object>)v);
            }
            var timing = json.GetObject("timing");
            if (timing != null)
            {
                r.QueueMs = (float)timing.GetNumber("queue_ms"); r.DecodeMs = (float)timing.GetNumber("decode_ms");
                r.InferenceMs = (float)timing.GetNumber("inference_ms"); r.TotalMs = (float)timing.GetNumber("total_ms");
            }
            var rig = json.GetObject("rig");
            if (rig != null) r.Rig = HolistreamRig.FromJson(rig);
            return r;
        }

        internal static float[] Floats(List<object> list)
        {
            var a = new float[list.Count];
            for (int i = 0; i < a.Length; i++) a[i] = list[i] is double ? (float)(double)list[i] : float.NaN;
            return a;
        }
    }

    /// <summary>The solved avatar rig (docs/rig.md): Unity frame, left-handed, Y up, the avatar faces +Z;
    /// local rotations relative to the T-pose, in the fixed orders below.</summary>
    public sealed class HolistreamRig
    {
        public static readonly string[] BoneNames = {
            "Hips", "Spine", "Chest", "Neck", "Head", "LeftUpperArm", "LeftLowerArm", "LeftHand",
            "RightUpperArm", "RightLowerArm", "RightHand", "LeftUpperLeg", "LeftLowerLeg", "LeftFoot",
            "RightUpperLeg", "RightLowerLeg", "RightFoot",
            "LeftThumbProximal", "LeftThumbIntermediate", "LeftThumbDistal",
            "LeftIndexProximal", "LeftIndexIntermediate", "LeftIndexDistal",
            "LeftMiddleProximal", "LeftMiddleIntermediate", "LeftMiddleDistal",
            "LeftRingProximal", "LeftRingIntermediate", "LeftRingDistal",
            "LeftLittleProximal", "LeftLittleIntermediate", "LeftLittleDistal",
            "RightThumbProximal", "RightThumbIntermediate", "RightThumbDistal",
            "RightIndexProximal", "RightIndexIntermediate", "RightIndexDistal",
            "RightMiddleProximal", "RightMiddleIntermediate", "RightMiddleDistal",
            "RightRingProximal", "RightRingIntermediate", "RightRingDistal",
            "RightLittleProximal", "RightLittleIntermediate", "RightLittleDistal" };
        public static readonly string[] ExpressionNames = {
            "Blink_L", "Blink_R", "A", "I", "U", "E", "O", "LookUp", "LookDown", "LookLeft", "LookRight" };
        public static readonly string[] ConfidenceNames = {
            "body", "left_arm", "right_arm", "left_leg", "right_leg", "face", "left_hand", "right_hand" };

        public float[] Bones;        // BoneNames.Length x 4: quaternion x, y, z, w (Unity's HumanBodyBones names)
        public float[] Hips;         // 3: hips position
        public float[] Head;         // 3: yaw, pitch, roll in degrees
        public float[] Expressions;  // in ExpressionNames order (VRM 0.x blend shape presets)
        public float[] Confidence;   // in ConfidenceNames order, 0..1

        public bool Bone(string name, out float x, out float y, out float z, out float w)
        {
            int i = Array.IndexOf(BoneNames, name);
            x = y = z = 0; w = 1;
            if (i < 0 || Bones == null || Bones.Length < i * 4 + 4) return false;
            x = Bones[i * 4]; y = Bones[i * 4 + 1]; z = Bones[i * 4 + 2]; w = Bones[i * 4 + 3];
            return true;
        }

        public float Expression(string name)
        {
            int i = Array.IndexOf(ExpressionNames, name);
            return i < 0 || Expressions == null || i >= Expressions.Length ? 0f : Expressions[i];
        }

        public float ConfidenceOf(string name)
        {
            int i = Array.IndexOf(ConfidenceNames, name);
            return i < 0 || Confidence == null || i >= Confidence.Length ? 0f : Confidence[i];
        }

        internal static HolistreamRig FromJson(Dictionary<string, object> json)
        {
            var rig = new HolistreamRig();
            rig.Bones = new float[BoneNames.Length * 4];
            var bones = json.GetObject("bones");
            for (int i = 0; i < BoneNames.Length; i++)
            {
                object q;
                float[] v = bones != null && bones.TryGetValue(BoneNames[i], out q) && q is List<object>
                    ? HolistreamResult.Floats((List<object>)q) : new float[] { 0, 0, 0, 1 };
                Array.Copy(v, 0, rig.Bones, i * 4, Math.Min(4, v.Length));
            }
            object hips, head;
            rig.Hips = json.TryGetValue("hips", out hips) && hips is List<object> ? HolistreamResult.Floats((List<object>)hips) : new float[3];
            rig.Head = json.TryGetValue("head", out head) && head is List<object> ? HolistreamResult.Floats((List<object>)head) : new float[3];
            rig.Expressions = Named(json.GetObject("expressions"), ExpressionNames);
            rig.Confidence = Named(json.GetObject("confidence"), ConfidenceNames);
            return rig;
        }

        static float[] Named(Dictionary<string, object> values, string[] names)
        {
            var a = new float[names.Length];
            for (int i = 0; i < names.Length; i++) a[i] = values == null ? 0f : (float)values.GetNumber(names[i]);
            return a;
        }
    }

    /// <summary>One session that stays up: connects, says hello, reads, and reconnects with back-off.</summary>
    public sealed class HolistreamClient : IDisposable
    {
        public const string ProtocolVersion = "1.1";
        readonly HolistreamOptions options;
        readonly ConcurrentQueue<HolistreamMessage> queue = new ConcurrentQueue<HolistreamMessage>();
        readonly SemaphoreSlim sendLock = new SemaphoreSlim(1, 1);
        readonly CancellationTokenSource stop = new CancellationTokenSource();
        readonly object ledgerLock = new object();
        readonly LinkedList<KeyValuePair<uint, DateTime>> inFlight = new LinkedList<KeyValuePair<uint, DateTime>>();
        readonly System.Random jitter = new System.Random();
        volatile ClientWebSocket socket;
        volatile HolistreamResult latest;
        Task loop;
        uint nextFrameId;
        long sent;
        double grantedFps;             // ready.fps_granted, then `grant` messages; 0: no pacing
        DateTime nextSend = DateTime.MinValue;
        string permanentError;

        public HolistreamClient(HolistreamOptions options) { this.options = options; MaxInFlight = 2; }

        /// <summary>The current session's ready message (null while not connected).</summary>
        public Dictionary<string, object> Ready { get; private set; }
        /// <summary>Frames a producer may have unanswered: ready.limits.max_in_flight.</summary>
        public int MaxInFlight { get; private set; }
        public int InFlight { get { lock (ledgerLock) return inFlight.Count; } }
        public bool Connected { get { return Ready != null; } }
        public long LocalDropped;       // messages discarded because the application did not take them
        public int Reconnects;
        /// <summary>The newest result, whatever the queue holds (handy in Update()).</summary>
        public HolistreamResult Latest { get { return latest; } }
        /// <summary>Why the client stopped for good (a refusal that retrying cannot fix), or null.</summary>
        public string PermanentError { get { return permanentError; } }

        public void Start()
        {
            if (loop == null) loop = Task.Run(() => RunAsync(stop.Token));
        }

        public bool TryReceive(out HolistreamMessage message) { return queue.TryDequeue(out message); }

        /// <summary>The frame rate the server grants this producer now (0 before ready).</summary>
        public double GrantedFps { get { return grantedFps; } }

        /// <summary>Producer: send one encoded image (JPEG, PNG or WebP) if a credit is free and the granted
        /// rate allows it; never blocks for long. tsMs is the capture time in milliseconds (any epoch);
        /// returns false when there is no credit, no session or it is too soon: skip this camera frame and
        /// send a newer one.</summary>
        public bool TrySendFrame(byte[] image, double tsMs)
        {
            var ws = socket;
            if (ws == null || Ready == null || ws.State != WebSocketState.Open) return false;
            uint id;
            lock (ledgerLock)
            {
                ExpireCredits();
                if (inFlight.Count >= MaxInFlight) return false;
                var now = DateTime.UtcNow;
                if (grantedFps > 0)
                {
                    if (now < nextSend) return false;
                    var interval = TimeSpan.FromSeconds(1.0 / grantedFps);
                    var earliest = now + TimeSpan.FromTicks(interval.Ticks / 2);
                    nextSend = nextSend + interval > earliest ? nextSend + interval : earliest;
                }
                id = nextFrameId++;
                inFlight.AddLast(new KeyValuePair<uint, DateTime>(id, DateTime.UtcNow));
                sent++;
            }
            var data = new byte[16 + image.Length];
            data[0] = (byte)'H'; data[1] = (byte)'S'; data[2] = (byte)'F'; data[3] = (byte)'1';
            Le.Put(data, 4, BitConverter.GetBytes(id));
            Le.Put(data, 8, BitConverter.GetBytes(tsMs));
            Buffer.BlockCopy(image, 0, data, 16, image.Length);
            try { SendAsync(ws, new ArraySegment<byte>(data), WebSocketMessageType.Binary).Wait(); }
            catch (Exception) { return false; }
            return true;
        }

        /// <summary>Producer: change what is tracked (null keeps a setting); answered by a "configured" event.</summary>
        public void Configure(string[] parts, bool? rig)
        {
            var sb = new StringBuilder("{\"type\":\"configure\"");
            if (parts != null) sb.Append(",\"parts\":").Append(JsonText.Array(parts));
            if (rig.HasValue) sb.Append(",\"rig\":").Append(rig.Value ? "true" : "false");
            SendText(sb.Append('}').ToString());
        }

        public void RequestStats(int id) { SendText("{\"type\":\"stats\",\"id\":" + id + "}"); }

        public void Dispose()
        {
            stop.Cancel();
            var ws = socket;
            if (ws != null)
            {
                try { ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None).Wait(2000); }
                catch (Exception) { }
            }
            if (loop != null) { try { loop.Wait(3000); } catch (Exception) { } }
        }

        void SendText(string text)
        {
            var ws = socket;
            if (ws == null || ws.State != WebSocketState.Open) return;
            try { SendAsync(ws, new ArraySegment<byte>(Encoding.UTF8.GetBytes(text)), WebSocketMessageType.Text).Wait(); }
            catch (Exception) { }
        }

        async Task SendAsync(ClientWebSocket ws, ArraySegment<byte> data, WebSocketMessageType kind)
        {
            await sendLock.WaitAsync().ConfigureAwait(false);
            try { await ws.SendAsync(data, kind, true, stop.Token).ConfigureAwait(false); }
            finally { sendLock.Release(); }
        }

        Uri Endpoint()
        {
            var b = new UriBuilder(options.Url);
            bool subscriber = options.Role == HolistreamRole.Subscriber;
            if (b.Path == "" || b.Path == "/") b.Path = subscriber ? "/ws/subscribe" : "/ws";
            var q = new List<string>();
            if (!string.IsNullOrEmpty(options.Stream)) q.Add("stream=" + Uri.EscapeDataString(options.Stream));
            if (!subscriber) q.Add("parts=" + string.Join(",", options.Parts));
            string query = b.Query.TrimStart('?');
            if (query.Length > 0) q.Insert(0, query);
            b.Query = string.Join("&", q.ToArray());
            return b.Uri;
        }

        string Hello()
        {
            var sb = new StringBuilder("{\"type\":\"hello\",\"protocol\":\"").Append(ProtocolVersion).Append('"');
            sb.Append(",\"format\":").Append(JsonText.String(options.Format));
            sb.Append(",\"rig\":").Append(options.Rig ? "true" : "false");
            sb.Append(",\"client\":").Append(JsonText.String(options.ClientName));
            if (options.Role == HolistreamRole.Producer)
            {
                sb.Append(",\"parts\":").Append(JsonText.Array(options.Parts));
                sb.Append(",\"world\":").Append(options.World ? "true" : "false");
                sb.Append(",\"fps\":").Append(options.Fps.ToString("R", CultureInfo.InvariantCulture));
            }
            return sb.Append('}').ToString();
        }

        async Task RunAsync(CancellationToken ct)
        {
            double backoff = options.BackoffMinSeconds;
            while (!ct.IsCancellationRequested)
            {
                string closeInfo = "";
                bool wasReady = false;
                try
                {
                    using (var ws = new ClientWebSocket())
                    {
                        if (!string.IsNullOrEmpty(options.Token))
                            ws.Options.SetRequestHeader("Authorization", "Bearer " + options.Token);
                        await ws.ConnectAsync(Endpoint(), ct).ConfigureAwait(false);
                        socket = ws;
                        await SendAsync(ws, new ArraySegment<byte>(Encoding.UTF8.GetBytes(Hello())), WebSocketMessageType.Text).ConfigureAwait(false);
                        wasReady = await ReadLoopAsync(ws, ct).ConfigureAwait(false);
                        closeInfo = ws.CloseStatus.HasValue ? ((int)ws.CloseStatus.Value).ToString(CultureInfo.InvariantCulture) : "";
                        closeInfo += " " + ws.CloseStatusDescription;
                    }
                }
                catch (OperationCanceledException) { }
                catch (Exception e) { closeInfo = e.GetBaseException().Message; }
                socket = null;
                Ready = null;
                lock (ledgerLock) inFlight.Clear();
                if (ct.IsCancellationRequested) break;
                var ev = new Dictionary<string, object>();
                ev["type"] = "disconnected"; ev["reason"] = closeInfo.Trim();
                Enqueue(new HolistreamEvent { Type = "disconnected", Json = ev });
                if (!options.Reconnect || permanentError != null) break;
                if (wasReady) backoff = options.BackoffMinSeconds;  // it worked: start over gently
                double delay = backoff * (0.5 + jitter.NextDouble() * 0.5);
                backoff = Math.Min(options.BackoffMaxSeconds, backoff * 2);
                Reconnects++;
                try { await Task.Delay(TimeSpan.FromSeconds(delay), ct).ConfigureAwait(false); }
                catch (OperationCanceledException) { break; }
            }
        }

        async Task<bool> ReadLoopAsync(ClientWebSocket ws, CancellationToken ct)
        {
            var buffer = new byte[64 * 1024];
            var message = new MemoryStream();
            bool ready = false;
            while (ws.State == WebSocketState.Open && !ct.IsCancellationRequested)
            {
                var chunk = await ws.ReceiveAsync(new ArraySegment<byte>(buffer), ct).ConfigureAwait(false);
                if (chunk.MessageType == WebSocketMessageType.Close)
                {
                    try { await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None).ConfigureAwait(false); }
                    catch (Exception) { }
                    break;
                }
                message.Write(buffer, 0, chunk.Count);
                if (!chunk.EndOfMessage) continue;
                byte[] data = message.GetBuffer();
                int length = (int)message.Length;
                message.SetLength(0);
                HolistreamMessage msg;
                try
                {
                    if (chunk.MessageType == WebSocketMessageType.Binary) msg = HolistreamResult.FromBinary(data, length);
                    else msg = Parse(Encoding.UTF8.GetString(data, 0, length));
                }
                catch (Exception) { continue; }  // a message this client cannot read: ignored, as the protocol asks
                if (msg.Type == "ready" && !ready)
                {
                    ready = true;
                    var ev = (HolistreamEvent)msg;
                    var limits = ev.Json.GetObject("limits");
                    if (limits != null && limits.ContainsKey("max_in_flight")) MaxInFlight = Math.Max(1, (int)limits.GetNumber("max_in_flight"));
                    grantedFps = ev.Json.GetNumber("fps_granted");
                    nextSend = DateTime.MinValue;
                    Ready = ev.Json;
                    Enqueue(new HolistreamEvent { Type = "connected", Json = ev.Json });
                }
                Enqueue(msg);   // first: once a credit comes back, its answer is already there to take
                Account(msg);
            }
            return ready;
        }

        static HolistreamMessage Parse(string text)
        {
            var json = Json.Parse(text) as Dictionary<string, object>;
            if (json == null) throw new InvalidDataException("not a JSON object");
            string type = json.GetString("type");
            if (type == "result") return HolistreamResult.FromJson(json);
            return new HolistreamEvent { Type = type, Json = json };
        }

        void Enqueue(HolistreamMessage msg)
        {
            var result = msg as HolistreamResult;
            if (result != null) latest = result;
            queue.Enqueue(msg);
            HolistreamMessage discarded;
            while (queue.Count > options.QueueCapacity && queue.TryDequeue(out discarded)) Interlocked.Increment(ref LocalDropped);
        }

        // Credits (docs/protocol.md, "Flow control"): a frame's credit comes back with its result, an error
        // naming it, or a drop the server counts (a result's `dropped` releases the oldest frames first).
        void Account(HolistreamMessage msg)
        {
            var result = msg as HolistreamResult;
            var ev = msg as HolistreamEvent;
            lock (ledgerLock)
            {
                if (result != null)
                {
                    Remove(result.Frame);
                    for (uint i = 0; i < result.Dropped && inFlight.Count > 0; i++) inFlight.RemoveFirst();
                }
                else if (ev != null && ev.Type == "error" && ev.Frame.HasValue) Remove((uint)ev.Frame.Value);
                else if (ev != null && ev.Type == "grant" && ev.Json.GetNumber("fps") > 0) grantedFps = ev.Json.GetNumber("fps");
                else if (ev != null && ev.Type == "stats" && ev.Json.GetNumber("pending") == 0 && ev.Json.GetNumber("in_flight") == 0
                         && (long)ev.Json.GetNumber("received") >= sent) inFlight.Clear();
                else if (ev != null && ev.Type == "error" && ev.Fatal)
                {
                    string code = ev.Code;
                    if (code == "bad_hello" || code == "unsupported_protocol" || code == "read_only") permanentError = code + ": " + ev.Text;
                }
            }
        }

        void Remove(uint frame)
        {
            for (var node = inFlight.First; node != null; node = node.Next)
                if (node.Value.Key == frame) { inFlight.Remove(node); return; }
        }

        void ExpireCredits()
        {
            var limit = DateTime.UtcNow.AddSeconds(-options.CreditTimeoutSeconds);
            while (inFlight.Count > 0 && inFlight.First.Value.Value < limit) inFlight.RemoveFirst();
        }
    }

    /// <summary>Little-endian reads, whatever the host's byte order.</summary>
    static class Le
    {
        public static int U16(byte[] b, int o) { return b[o] | (b[o + 1] << 8); }
        public static uint U32(byte[] b, int o) { return (uint)(b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)); }
        public static float F32(byte[] b, int o)
        {
            if (BitConverter.IsLittleEndian) return BitConverter.ToSingle(b, o);
            return BitConverter.ToSingle(new[] { b[o + 3], b[o + 2], b[o + 1], b[o] }, 0);
        }
        public static double F64(byte[] b, int o)
        {
            if (BitConverter.IsLittleEndian) return BitConverter.ToDouble(b, o);
            var r = new byte[8];
            for (int i = 0; i < 8; i++) r[i] = b[o + 7 - i];
            return BitConverter.ToDouble(r, 0);
        }
        public static float[] F32Array(byte[] b, int o, int count, int length)
        {
            if (o + count * 4 > length) throw new InvalidDataException("binary result shorter than its flags say");
            var a = new float[count];
            if (BitConverter.IsLittleEndian) Buffer.BlockCopy(b, o, a, 0, count * 4);
            else for (int i = 0; i < count; i++) a[i] = F32(b, o + i * 4);
            return a;
        }
        /// <summary>Copy host-order bytes (BitConverter.GetBytes) into a little-endian field.</summary>
        public static void Put(byte[] dest, int o, byte[] hostOrder)
        {
            for (int i = 0; i < hostOrder.Length; i++)
                dest[o + i] = hostOrder[BitConverter.IsLittleEndian ? i : hostOrder.Length - 1 - i];
        }
    }

    static class JsonText
    {
        public static string String(string s)
        {
            var sb = new StringBuilder("\"");
            foreach (char c in s ?? "")
            {
                if (c == '"' || c == '\\') sb.Append('\\').Append(c);
                else if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4"));
                else sb.Append(c);
            }
            return sb.Append('"').ToString();
        }

        public static string Array(string[] items)
        {
            var quoted = new string[items.Length];
            for (int i = 0; i < items.Length; i++) quoted[i] = String(items[i]);
            return "[" + string.Join(",", quoted) + "]";
        }
    }

    public static class JsonObjectExtensions
    {
        public static double GetNumber(this Dictionary<string, object> o, string key)
        {
            object v;
            return o != null && o.TryGetValue(key, out v) && v is double ? (double)v : 0;
        }

        public static string GetString(this Dictionary<string, object> o, string key)
        {
            object v;
            return o != null && o.TryGetValue(key, out v) ? v as string : null;
        }

        public static Dictionary<string, object> GetObject(this Dictionary<string, object> o, string key)
        {
            object v;
            return o != null && o.TryGetValue(key, out v) ? v as Dictionary<string, object> : null;
        }
    }

    /// <summary>A small JSON reader: objects become Dictionary&lt;string, object&gt;, arrays List&lt;object&gt;,
    /// numbers double, plus string, bool and null.</summary>
    public static class Json
    {
        public static object Parse(string text)
        {
            int i = 0;
            object value = Value(text, ref i);
            Space(text, ref i);
            if (i != text.Length) throw new InvalidDataException("trailing characters in JSON");
            return value;
        }

        static void Space(string s, ref int i) { while (i < s.Length && char.IsWhiteSpace(s[i])) i++; }

        static object Value(string s, ref int i)
        {
            Space(s, ref i);
            if (i >= s.Length) throw new InvalidDataException("unexpected end of JSON");
            char c = s[i];
            if (c == '{')
            {
                var o = new Dictionary<string, object>();
                i++; Space(s, ref i);
                if (s[i] == '}') { i++; return o; }
                while (true)
                {
                    Space(s, ref i);
                    string key = Str(s, ref i);
                    Space(s, ref i);
                    if (s[i++] != ':') throw new InvalidDataException("expected ':' in JSON");
                    o[key] = Value(s, ref i);
                    Space(s, ref i);
                    if (s[i] == ',') { i++; continue; }
                    if (s[i++] != '}') throw new InvalidDataException("expected '}' in JSON");
                    return o;
                }
            }
            if (c == '[')
            {
                var a = new List<object>();
                i++; Space(s, ref i);
                if (s[i] == ']') { i++; return a; }
                while (true)
                {
                    a.Add(Value(s, ref i));
                    Space(s, ref i);
                    if (s[i] == ',') { i++; continue; }
                    if (s[i++] != ']') throw new InvalidDataException("expected ']' in JSON");
                    return a;
                }
            }
            if (c == '"') return Str(s, ref i);
            if (string.CompareOrdinal(s, i, "true", 0, 4) == 0) { i += 4; return true; }
            if (string.CompareOrdinal(s, i, "false", 0, 5) == 0) { i += 5; return false; }
            if (string.CompareOrdinal(s, i, "null", 0, 4) == 0) { i += 4; return null; }
            int start = i;
            while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
            if (start == i) throw new InvalidDataException("unexpected character in JSON");
            double number = double.Parse(s.Substring(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture);
            return number == 0 && s[start] == '-' ? -0.0 : number;  // older runtimes lose the sign of -0
        }

        static string Str(string s, ref int i)
        {
            if (s[i] != '"') throw new InvalidDataException("expected a JSON string");
            var sb = new StringBuilder();
            i++;
            while (s[i] != '"')
            {
                char c = s[i++];
                if (c != '\\') { sb.Append(c); continue; }
                char e = s[i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u': sb.Append((char)int.Parse(s.Substring(i, 4), NumberStyles.HexNumber)); i += 4; break;
                    default: sb.Append(e); break;
                }
            }
            i++;
            return sb.ToString();
        }
    }
}
