-- sustain.lua: Wireshark dissector for sustain's TCP options and for the
-- mobility server's control protocol.
--
-- Read first: PROTOCOL.md §3 (option layouts; §3.6 receiving rules; §3.7 example
-- bytes), §4.2 (tokens), §4.3 (MACs), §4.5 (request numbers), §15 (control
-- protocol). RFC 6994 (shared experimental options, 16-bit ExIDs).
--
-- Install: `just wireshark` (copies this file to ~/.local/lib/wireshark/plugins/),
-- or per run: `tshark -X lua_script:wireshark/sustain.lua -r capture.pcapng`.
--
-- What it does:
--   * replaces the TCP option dissector for kind 253: our ExIDs (Migrate-Permit
--     0x5E9A, Migrate 0x0A21, Address-Update 0x3B4C, Relay-Ticket 0xAB48) are
--     dissected field by field; any other ExID goes to Wireshark's own
--     experimental-option dissector;
--   * follows the connections of the capture (SYN / SYN-ACK keys, tokens, MSYN
--     Permits, MSYN-ACK nonces) in frame order, the way the conformance
--     normalizer does, and checks tokens (§4.2), MACs (§4.3, HMAC-SHA256 in pure
--     Lua: Wireshark 4.0's Lua has no Gcrypt bindings), Confirm nonces (§4.4) and
--     MSYN replays (§4.5) wherever the capture holds what is needed;
--   * dissects the control protocol (§15) on a TCP port (preference, default
--     7001, the lab's) and checks control MACs under the verifier a Register
--     carries or one derived from the captured keys (§15.2);
--   * claims the lab's transfer port (preference, default 5001) for opaque data,
--     so that Wireshark does not guess the bulk data as Thrift.
--
-- Display filter fields: `sustain.*` (options) and `sustainctl.*` (control).
-- Checks: sustain.mac_status / sustain.token_status / sustain.nonce_status are
-- "ok", "BAD" (or "WRONG") or "unknown" (the capture lacks the keys).

-- Loaded twice (an installed copy and `-X lua_script:`): the first copy stays.
do
    local ok, loaded = pcall(Dissector.get, "sustain")
    if ok and loaded then
        return
    end
end

local p_opt = Proto("sustain", "sustain TCP options (RFC 6994 kind 253)")
local p_ctl = Proto("sustainctl", "sustain mobility server control protocol")
local p_data = Proto("sustaindata", "sustain lab transfer data")
local p_pxy = Proto("sustainpxy", "sustain server-proxy relay session")

---------------------------------------------------------------------------
-- SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104) over Lua strings.
---------------------------------------------------------------------------

local band, bor, bxor, bnot = bit32.band, bit32.bor, bit32.bxor, bit32.bnot
local rrotate, rshift = bit32.rrotate, bit32.rshift
local TWO32 = 4294967296

local K256 = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local function u32be(n)
    return string.char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
        band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function u16be(n)
    return string.char(band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function read_u32(s, i)
    local a, b, c, d = s:byte(i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
end

local function sha256(msg)
    local h0, h1, h2, h3 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
    local h4, h5, h6, h7 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    local bits = #msg * 8
    msg = msg .. "\128" .. string.rep("\0", (55 - #msg) % 64)
        .. u32be(math.floor(bits / TWO32)) .. u32be(bits % TWO32)
    local w = {}
    for p = 1, #msg, 64 do
        for i = 0, 15 do
            w[i] = read_u32(msg, p + i * 4)
        end
        for i = 16, 63 do
            local x, y = w[i - 15], w[i - 2]
            local s0 = bxor(rrotate(x, 7), rrotate(x, 18), rshift(x, 3))
            local s1 = bxor(rrotate(y, 17), rrotate(y, 19), rshift(y, 10))
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) % TWO32
        end
        local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
        for i = 0, 63 do
            local s1 = bxor(rrotate(e, 6), rrotate(e, 11), rrotate(e, 25))
            local ch = bxor(band(e, f), band(bnot(e), g))
            local t1 = (h + s1 + ch + K256[i + 1] + w[i]) % TWO32
            local s0 = bxor(rrotate(a, 2), rrotate(a, 13), rrotate(a, 22))
            local maj = bxor(band(a, b), band(a, c), band(b, c))
            local t2 = (s0 + maj) % TWO32
            h, g, f, e, d, c, b, a = g, f, e, (d + t1) % TWO32, c, b, a, (t1 + t2) % TWO32
        end
        h0, h1, h2, h3 = (h0 + a) % TWO32, (h1 + b) % TWO32, (h2 + c) % TWO32, (h3 + d) % TWO32
        h4, h5, h6, h7 = (h4 + e) % TWO32, (h5 + f) % TWO32, (h6 + g) % TWO32, (h7 + h) % TWO32
    end
    return u32be(h0) .. u32be(h1) .. u32be(h2) .. u32be(h3)
        .. u32be(h4) .. u32be(h5) .. u32be(h6) .. u32be(h7)
end

local function hmac_sha256(key, msg)
    if #key > 64 then
        key = sha256(key)
    end
    -- RFC 2104 §2: a short key is zero-padded to the block size.
    key = key .. string.rep("\0", 64 - #key)
    local ipad, opad = {}, {}
    for i = 1, 64 do
        local k = key:byte(i)
        ipad[i] = string.char(bxor(k, 0x36))
        opad[i] = string.char(bxor(k, 0x5c))
    end
    return sha256(table.concat(opad) .. sha256(table.concat(ipad) .. msg))
end

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function ip_string(s)
    return string.format("%d.%d.%d.%d", s:byte(1, 4))
end

local function ip_bytes(text)
    local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return nil
    end
    return string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

-- PROTOCOL.md §4.2: token(key) = first 4 bytes of SHA-256(key, 8 bytes big-endian).
local token_cache = {}
local function token_of(key)
    local t = token_cache[key]
    if not t then
        t = read_u32(sha256(key), 1)
        token_cache[key] = t
    end
    return t
end

---------------------------------------------------------------------------
-- Option fields
---------------------------------------------------------------------------

local EXID_PERMIT, EXID_MIGRATE, EXID_UPDATE, EXID_RELAY = 0x5E9A, 0x0A21, 0x3B4C, 0xAB48
local exid_names = {
    [EXID_PERMIT] = "Migrate-Permit",
    [EXID_MIGRATE] = "Migrate",
    [EXID_UPDATE] = "Address-Update",
    [EXID_RELAY] = "Relay-Ticket",
}
-- PROTOCOL.md §3.6 rule 2: the lengths each ExID's forms have.
local LENGTHS = {
    [EXID_PERMIT] = "10, 18",
    [EXID_MIGRATE] = "12, 16, 20, 24, 27",
    [EXID_UPDATE] = "24",
    [EXID_RELAY] = "20, 27",
}

local F = {
    kind = ProtoField.uint8("sustain.kind", "Kind", base.DEC),
    len = ProtoField.uint8("sustain.len", "Length", base.DEC),
    exid = ProtoField.uint16("sustain.exid", "ExID", base.HEX, exid_names),
    form = ProtoField.string("sustain.form", "Form"),
    malformed = ProtoField.string("sustain.malformed", "Malformed"),
    conn = ProtoField.uint32("sustain.conn", "Connection (index in this capture)", base.DEC),

    permit_addr = ProtoField.ipv4("sustain.permit.addr", "Direct IPv4 address"),
    permit_port = ProtoField.uint16("sustain.permit.port", "Direct port", base.DEC),
    permit_key = ProtoField.bytes("sustain.permit.key", "Key"),
    permit_key_token = ProtoField.uint32("sustain.permit.key_token", "Token of this key", base.HEX),
    permit_natted = ProtoField.bool("sustain.permit.natted", "Direct address differs from the IP source (NAPT)"),

    token = ProtoField.uint32("sustain.migrate.token", "Token of the receiver's key", base.HEX),
    request = ProtoField.uint32("sustain.migrate.request", "Request number", base.DEC),
    nonce = ProtoField.uint32("sustain.migrate.nonce", "Nonce", base.HEX),
    received = ProtoField.uint32("sustain.migrate.received", "Received offset", base.DEC),
    mac = ProtoField.bytes("sustain.migrate.mac", "MAC (truncated HMAC-SHA256)"),

    au_old = ProtoField.ipv4("sustain.address_update.old_addr", "Old IPv4 address"),
    au_token = ProtoField.uint32("sustain.address_update.token", "Token of the receiver's key", base.HEX),
    au_request = ProtoField.uint32("sustain.address_update.request", "Request number", base.DEC),
    au_mac = ProtoField.bytes("sustain.address_update.mac", "MAC (truncated HMAC-SHA256)"),

    relay_id = ProtoField.uint32("sustain.relay_ticket.id", "Ticket id (names the leg)", base.HEX),
    relay_request = ProtoField.uint32("sustain.relay_ticket.request", "Request number", base.DEC),
    relay_nonce = ProtoField.uint32("sustain.relay_ticket.nonce", "Nonce", base.HEX),
    relay_received = ProtoField.uint32("sustain.relay_ticket.received", "Received offset", base.DEC),
    relay_mac = ProtoField.bytes("sustain.relay_ticket.mac", "MAC (truncated HMAC-SHA256 under the ticket key)"),
    data = ProtoField.bytes("sustain.data", "Data"),

    mac_status = ProtoField.string("sustain.mac_status", "MAC check"),
    mac_expected = ProtoField.string("sustain.mac_expected", "Expected MAC"),
    token_status = ProtoField.string("sustain.token_status", "Token check"),
    nonce_status = ProtoField.string("sustain.nonce_status", "Nonce check"),
    replay = ProtoField.bool("sustain.replay", "Replayed MSYN"),
}
local fields = {}
for _, f in pairs(F) do
    fields[#fields + 1] = f
end
p_opt.fields = fields

local E = {
    bad_length = ProtoExpert.new("sustain.bad_length", "sustain option with a length none of its forms has",
        expert.group.MALFORMED, expert.severity.ERROR),
    duplicate = ProtoExpert.new("sustain.duplicate", "sustain ExID appears twice in one segment",
        expert.group.MALFORMED, expert.severity.ERROR),
    mac_bad = ProtoExpert.new("sustain.mac_bad", "MAC does not verify",
        expert.group.SECURITY, expert.severity.WARN),
    token_wrong = ProtoExpert.new("sustain.token_wrong", "Token is not the token of the receiver's key",
        expert.group.SECURITY, expert.severity.WARN),
    nonce_wrong = ProtoExpert.new("sustain.nonce_wrong", "Confirm does not echo the MSYN-ACK's nonce",
        expert.group.SECURITY, expert.severity.WARN),
    replay = ProtoExpert.new("sustain.replay.expert", "MSYN replayed",
        expert.group.SEQUENCE, expert.severity.WARN),
    zero_key = ProtoExpert.new("sustain.zero_key", "Zero key",
        expert.group.SECURITY, expert.severity.WARN),
    misplaced = ProtoExpert.new("sustain.misplaced", "Form not meaningful on this segment; receivers ignore it",
        expert.group.PROTOCOL, expert.severity.NOTE),
    after_eol = ProtoExpert.new("sustain.after_eol", "Option after End of Option List or a broken option; receivers do not read it",
        expert.group.MALFORMED, expert.severity.WARN),
    move = ProtoExpert.new("sustain.move", "sustain move",
        expert.group.SEQUENCE, expert.severity.CHAT),
}
local experts = {}
for _, e in pairs(E) do
    experts[#experts + 1] = e
end
p_opt.experts = experts

---------------------------------------------------------------------------
-- Field extractors (the TCP/IP headers of the segment being dissected)
---------------------------------------------------------------------------

local x_ip_proto = Field.new("ip.proto")
local x_ip_src = Field.new("ip.src")
local x_ip_dst = Field.new("ip.dst")
local x_sport = Field.new("tcp.srcport")
local x_dport = Field.new("tcp.dstport")
local x_seq = Field.new("tcp.seq_raw")
local x_ack = Field.new("tcp.ack_raw")
local x_flags = Field.new("tcp.flags")
local x_options = Field.new("tcp.options")

local function first(extractor)
    local v = { extractor() }
    return v[1]
end

---------------------------------------------------------------------------
-- Connection state, learned in frame order on the first pass (as the
-- conformance normalizer does: conformance/src/transcript.rs `Analysis::learn`)
---------------------------------------------------------------------------

local state

local function reset_state()
    state = {
        conns = {},        -- [i] = { sides = {[0] = {isn, key}, [1] = ...}, msyn_direct, nonces, answered }
        tokens = {},       -- token -> { conn, side whose key it is }: first owner wins
        initiators = {},   -- initiator ISN -> conn
        flows = {},        -- "src:port>dst:port" -> { conn, side sending on it }
        msyns_seen = {},   -- "conn/sender/request" -> true
        relay_tickets = {}, -- relay ticket id -> { conn, side whose leg it names }
        frames = {},       -- frame number -> analysis of that frame's segment
        verifiers = {},    -- control connection id (hex) -> { verifier, from }
        ctl = {},          -- control message results by "frame:offset"
        last = 0,          -- the highest frame number dissected since the reset
        learning = nil,    -- the frame that may add to the state now
    }
end
reset_state()

local function new_conn()
    local c = {
        sides = { [0] = {}, [1] = {} },
        msyn_direct = {},
        nonces = {},
        answered = {},
    }
    state.conns[#state.conns + 1] = c
    return #state.conns
end

local function flow_key(src, sport, dst, dport)
    return src .. ":" .. sport .. ">" .. dst .. ":" .. dport
end

local function bind(seg, conn, side)
    state.flows[flow_key(seg.src, seg.sport, seg.dst, seg.dport)] = { conn, side }
    state.flows[flow_key(seg.dst, seg.dport, seg.src, seg.sport)] = { conn, 1 - side }
end

local function set_isn(conn, side, isn)
    local s = state.conns[conn].sides[side]
    if s.isn == nil then
        s.isn = isn
        if side == 0 and state.initiators[isn] == nil then
            state.initiators[isn] = conn
        end
    end
end

-- PROTOCOL.md §15.2: id and verifier from the two keys.
local function derive_credentials(key_a, key_b)
    if key_a == key_b then
        return nil
    end
    local low, high = key_a, key_b
    if high < low then -- byte strings of equal length: unsigned big-endian order
        low, high = high, low
    end
    local id = u32be(token_of(low)) .. u32be(token_of(high))
    local verifier = hmac_sha256(low .. high, "sustain server verifier\0" .. id):sub(1, 16)
    return id, verifier
end

local function set_key(conn, side, key)
    local c = state.conns[conn]
    local s = c.sides[side]
    if s.key == nil and key ~= nil then
        s.key = key
        local t = token_of(key)
        if state.tokens[t] == nil then
            state.tokens[t] = { conn, side }
        end
        local other = c.sides[1 - side].key
        if other then
            local id, verifier = derive_credentials(key, other)
            if id and state.verifiers[hex(id)] == nil then
                state.verifiers[hex(id)] = { verifier = verifier, from = "the keys of connection " .. conn }
            end
        end
    end
end

-- The options area as our analysis sees it: the walk stops at End of Option
-- List and at the first broken option, as a receiver's does.
local function walk_options(bytes)
    local items, i, n = {}, 1, #bytes
    while i <= n do
        local kind = bytes:byte(i)
        if kind == 0 then
            break
        elseif kind == 1 then
            i = i + 1
        else
            if i + 1 > n then
                break
            end
            local len = bytes:byte(i + 1)
            if len < 2 or i + len - 1 > n then
                break
            end
            if kind == 253 and len >= 4 then
                items[#items + 1] = {
                    pos = i - 1,
                    len = len,
                    exid = bytes:byte(i + 2) * 256 + bytes:byte(i + 3),
                    data = bytes:sub(i + 4, i + len - 1),
                }
            end
            i = i + len
        end
    end
    return items
end

-- PROTOCOL.md §3.2 - §3.5: decode one of our options by ExID and length.
local function decode(item)
    local d, len = item.data, item.len
    if item.exid == EXID_PERMIT then
        if len == 18 or len == 10 then
            return { form = len == 18 and "permit-full" or "permit-short", addr = d:sub(1, 4),
                port = d:byte(5) * 256 + d:byte(6), key = len == 18 and d:sub(7, 14) or nil }
        end
    elseif item.exid == EXID_MIGRATE then
        if len == 20 then
            return { form = "msyn", token = read_u32(d, 1), request = read_u32(d, 5), mac = d:sub(9, 16) }
        elseif len == 27 or len == 24 then
            local r = {
                form = len == 27 and "msyn-ack" or "msyn-ack-v0",
                token = read_u32(d, 1), request = read_u32(d, 5), nonce = read_u32(d, 9),
            }
            if len == 27 then
                r.received_raw = d:sub(13, 15)
                r.received = (d:byte(13) * 256 + d:byte(14)) * 256 + d:byte(15)
                r.mac = d:sub(16, 23)
            else
                r.received_raw = ""
                r.mac = d:sub(13, 20)
            end
            return r
        elseif len == 16 or len == 12 then
            return { form = len == 16 and "confirm" or "confirm-v0", request = read_u32(d, 1),
                nonce = read_u32(d, 5), received = len == 16 and read_u32(d, 9) or nil }
        end
    elseif item.exid == EXID_UPDATE then
        if len == 24 then
            return { form = "address-update", old = d:sub(1, 4), token = read_u32(d, 5),
                request = read_u32(d, 9), mac = d:sub(13, 20) }
        end
    elseif item.exid == EXID_RELAY then
        -- PROTOCOL.md §3.5: the relay MSYN form (20) and the proxy's MSYN-ACK form (27).
        if len == 20 then
            return { form = "relay-msyn", ticket = read_u32(d, 1), request = read_u32(d, 5), mac = d:sub(9, 16) }
        elseif len == 27 then
            return { form = "relay-msyn-ack", ticket = read_u32(d, 1), request = read_u32(d, 5),
                nonce = read_u32(d, 9), received = (d:byte(13) * 256 + d:byte(14)) * 256 + d:byte(15),
                mac = d:sub(16, 23) }
        end
    end
    return nil
end

local function mac_check(sender_key, receiver_key, message, mac)
    local expected = hmac_sha256(sender_key .. receiver_key, message):sub(1, 8)
    return expected == mac and "ok" or "BAD", expected
end

-- One segment's analysis: the connection and side, and per sustain option
-- (by position in the options area) the decoded fields and the checks.
local function analyze(seg)
    local items = walk_options(seg.options)
    local permit, migrate, update, relay
    for _, item in ipairs(items) do
        item.dec = decode(item)
        local dec = item.dec
        if dec then
            if dec.form == "permit-full" or dec.form == "permit-short" then
                permit = permit or dec
            elseif item.exid == EXID_MIGRATE then
                migrate = migrate or dec
            elseif dec.form == "address-update" then
                update = update or dec
            elseif item.exid == EXID_RELAY then
                relay = relay or dec
            end
        end
    end
    local syn, ack = seg.syn, seg.ack_flag
    local conn, side
    local replay = false
    local mform = migrate and migrate.form
    local rform = not migrate and syn and relay and relay.form
    if syn and not ack and rform == "relay-msyn" then
        -- PROTOCOL.md §6.9: a relay MSYN; its ticket id names the leg once
        -- seen (the normalizer finds the first one by sequence numbers too).
        local owner = state.relay_tickets[relay.ticket]
        if owner then
            conn, side = owner[1], owner[2]
        else
            conn, side = new_conn(), 0
            state.relay_tickets[relay.ticket] = { conn, side }
        end
        local c = state.conns[conn]
        local req = side .. "/" .. relay.request
        if permit and c.msyn_direct[req] == nil then
            c.msyn_direct[req] = permit.addr .. u16be(permit.port)
        end
        local seen = conn .. "/" .. req
        if state.msyns_seen[seen] or c.answered[req] then
            replay = true
        end
        state.msyns_seen[seen] = true
        bind(seg, conn, side)
    elseif syn and ack and rform == "relay-msyn-ack" then
        -- The proxy's MSYN-ACK: its ticket id is the receiving leg's.
        local owner = state.relay_tickets[relay.ticket]
            or state.flows[flow_key(seg.dst, seg.dport, seg.src, seg.sport)]
        local mover
        if owner then
            conn, mover = owner[1], owner[2]
        else
            conn, mover = new_conn(), 1
        end
        local c = state.conns[conn]
        local req = mover .. "/" .. relay.request
        if c.nonces[req] == nil then
            c.nonces[req] = relay.nonce
        end
        c.answered[req] = true
        side = 1 - mover
        bind(seg, conn, side)
    elseif syn and not ack and mform == "msyn" then
        -- PROTOCOL.md §3.3: the token names the connection at the MSYN's receiver.
        local owner = state.tokens[migrate.token]
        if owner then
            conn, side = owner[1], 1 - owner[2]
        else
            conn, side = new_conn(), 0
        end
        local c = state.conns[conn]
        -- PROTOCOL.md §4.5: each side numbers its own MSYNs (when both ends
        -- move, both send a request 1), so requests are keyed by the mover.
        local req = side .. "/" .. migrate.request
        if permit and c.msyn_direct[req] == nil then
            c.msyn_direct[req] = permit.addr .. u16be(permit.port)
        end
        local seen = conn .. "/" .. req
        if state.msyns_seen[seen] or c.answered[req] then
            replay = true
        end
        state.msyns_seen[seen] = true
        bind(seg, conn, side)
    elseif syn and ack and (mform == "msyn-ack" or mform == "msyn-ack-v0") then
        local owner = state.tokens[migrate.token]
            or state.flows[flow_key(seg.dst, seg.dport, seg.src, seg.sport)]
        local mover
        if owner then
            conn, mover = owner[1], owner[2]
        else
            conn, mover = new_conn(), 1
        end
        local c = state.conns[conn]
        local req = mover .. "/" .. migrate.request
        if c.nonces[req] == nil then
            c.nonces[req] = migrate.nonce
        end
        c.answered[req] = true
        side = 1 - mover
        bind(seg, conn, side)
    elseif syn and not ack then
        -- A plain SYN: the same ISN is the same connection (a NAPT keeps ISNs).
        local known = state.flows[flow_key(seg.src, seg.sport, seg.dst, seg.dport)]
        if known and known[2] == 0 and state.conns[known[1]].sides[0].isn == seg.seq then
            conn = known[1]
        elseif state.initiators[seg.seq] then
            conn = state.initiators[seg.seq]
        else
            conn = new_conn()
            set_isn(conn, 0, seg.seq)
        end
        side = 0
        set_key(conn, 0, permit and permit.key)
        bind(seg, conn, 0)
    elseif syn and ack then
        local initiator_isn = (seg.ack - 1) % TWO32
        local rev = state.flows[flow_key(seg.dst, seg.dport, seg.src, seg.sport)]
        if rev and state.conns[rev[1]].sides[0].isn == initiator_isn then
            conn = rev[1]
        else
            conn = state.initiators[initiator_isn]
        end
        if not conn then
            conn = new_conn()
            set_isn(conn, 0, initiator_isn)
        end
        side = 1
        set_isn(conn, 1, seg.seq)
        set_key(conn, 1, permit and permit.key)
        bind(seg, conn, 1)
    else
        local bound = state.flows[flow_key(seg.src, seg.sport, seg.dst, seg.dport)]
        if not bound and update then
            -- PROTOCOL.md §9: an Address-Update finds its connection by token.
            local owner = state.tokens[update.token]
            if owner then
                bound = { owner[1], 1 - owner[2] }
                bind(seg, bound[1], bound[2])
            end
        end
        if not bound then
            -- Mid-stream with no handshake in the capture: a connection of its own.
            local c = new_conn()
            set_isn(c, 0, (seg.seq - 1) % TWO32)
            if ack then
                set_isn(c, 1, (seg.ack - 1) % TWO32)
            end
            bind(seg, c, 0)
            bound = { c, 0 }
        end
        conn, side = bound[1], bound[2]
    end
    if ack then
        set_isn(conn, 1 - side, (seg.ack - 1) % TWO32)
    end
    set_isn(conn, side, (seg.seq - (syn and 0 or 1)) % TWO32)

    -- The checks, per option.
    local c = state.conns[conn]
    local my_key, peer_key = c.sides[side].key, c.sides[1 - side].key
    local result = { conn = conn, side = side, items = {}, kind = nil }
    local seen_exids = {}
    for _, item in ipairs(items) do
        local r = { dec = item.dec, duplicate = seen_exids[item.exid] or false }
        seen_exids[item.exid] = true
        local dec = item.dec
        local function token_status(token)
            if not peer_key then
                return "unknown"
            end
            return token_of(peer_key) == token and "ok" or "WRONG"
        end
        if dec and dec.form == "msyn" then
            r.token_status = token_status(dec.token)
            r.replay = replay
            if my_key and peer_key and permit then
                -- PROTOCOL.md §4.3: M = "sustain MSYN" 0 token request addr port.
                local m = "sustain MSYN\0" .. u32be(token_of(peer_key)) .. u32be(dec.request)
                    .. permit.addr .. u16be(permit.port)
                r.mac_status, r.mac_expected = mac_check(my_key, peer_key, m, dec.mac)
            else
                r.mac_status = "unknown"
                r.why = not permit and "no Migrate-Permit in the MSYN"
                    or "the keys of this connection are not in the capture"
            end
        elseif dec and (dec.form == "msyn-ack" or dec.form == "msyn-ack-v0") then
            r.token_status = token_status(dec.token)
            local direct = c.msyn_direct[(1 - side) .. "/" .. dec.request]
            if my_key and peer_key and direct then
                -- PROTOCOL.md §4.3: M = "sustain MSYN-ACK" 0 token request nonce
                -- addr port [received offset, 3 bytes as on the wire].
                local m = "sustain MSYN-ACK\0" .. u32be(token_of(peer_key)) .. u32be(dec.request)
                    .. u32be(dec.nonce) .. direct .. dec.received_raw
                r.mac_status, r.mac_expected = mac_check(my_key, peer_key, m, dec.mac)
            else
                r.mac_status = "unknown"
                r.why = not direct and "the answered MSYN's Permit is not in the capture"
                    or "the keys of this connection are not in the capture"
            end
        elseif dec and (dec.form == "confirm" or dec.form == "confirm-v0") then
            local n = c.nonces[side .. "/" .. dec.request]
            if n == nil then
                r.nonce_status = "unknown"
            else
                r.nonce_status = n == dec.nonce and "ok" or "WRONG"
            end
        elseif dec and (dec.form == "relay-msyn" or dec.form == "relay-msyn-ack") then
            -- PROTOCOL.md §4.7: keyed by the relay secret, which no capture holds.
            r.mac_status = "unknown"
            r.why = "the relay secret is not in the capture"
        elseif dec and dec.form == "address-update" then
            r.token_status = token_status(dec.token)
            if my_key and peer_key then
                local m = "sustain ADDRESS-UPDATE\0" .. u32be(token_of(peer_key)) .. u32be(dec.request)
                    .. dec.old
                r.mac_status, r.mac_expected = mac_check(my_key, peer_key, m, dec.mac)
            else
                r.mac_status = "unknown"
                r.why = "the keys of this connection are not in the capture"
            end
        end
        result.items[item.pos] = r
    end
    return result
end

-- The segment being dissected, from the TCP/IP header fields; nil when it is
-- not a plain IPv4/TCP segment (e.g. a TCP header quoted inside an ICMP error)
-- or when the fields are not there (a pass without a protocol tree).
local function current_segment()
    local proto = first(x_ip_proto)
    if not proto or proto.value ~= 6 then
        return nil
    end
    local src, dst = first(x_ip_src), first(x_ip_dst)
    local sport, dport = first(x_sport), first(x_dport)
    local seq, flags = first(x_seq), first(x_flags)
    if not (src and dst and sport and dport and seq and flags) then
        return nil
    end
    local ackf = first(x_ack)
    local opts = first(x_options)
    local f = flags.value
    return {
        src = tostring(src.value),
        dst = tostring(dst.value),
        sport = sport.value,
        dport = dport.value,
        seq = seq.value,
        ack = ackf and ackf.value or 0,
        syn = band(f, 0x02) ~= 0,
        ack_flag = band(f, 0x10) ~= 0,
        rst = band(f, 0x04) ~= 0,
        fin = band(f, 0x01) ~= 0,
        options = opts and opts.range:bytes():raw() or "",
        options_offset = opts and opts.offset or nil,
    }
end

-- The analysis of the frame being dissected: made once, on the first pass.

-- The segment of a whole frame (Ethernet, Linux cooked capture or raw IPv4), read
-- from its bytes as the conformance crate reads it (conformance/src/segment.rs):
-- what the follower uses when there is no protocol tree to take fields from.
local function frame_segment(tvb)
    local n = tvb:len()
    local function u8(at)
        return at < n and tvb(at, 1):uint() or nil
    end
    local function is_ipv4(at)
        local b = u8(at)
        return b ~= nil and bit32.rshift(b, 4) == 4
    end
    local ip
    local function ethertype(at)
        return at + 1 < n and tvb(at, 2):uint() or nil
    end
    if ethertype(12) == 0x0800 and is_ipv4(14) then
        ip = 14
    elseif ethertype(12) == 0x8100 and ethertype(16) == 0x0800 and is_ipv4(18) then
        ip = 18
    elseif ethertype(14) == 0x0800 and is_ipv4(16) then
        ip = 16
    elseif is_ipv4(0) then
        ip = 0
    else
        return nil
    end
    local ihl = band(u8(ip), 0x0f) * 4
    if ihl < 20 or ip + 20 > n or u8(ip + 9) ~= 6 then
        return nil
    end
    if band(tvb(ip + 6, 2):uint(), 0x1fff) ~= 0 then
        return nil
    end
    local tcp = ip + ihl
    if tcp + 20 > n then
        return nil
    end
    local data_offset = bit32.rshift(u8(tcp + 12), 4) * 4
    if data_offset < 20 then
        return nil
    end
    local flags = u8(tcp + 13)
    local opt_len = math.min(data_offset, n - tcp) - 20
    return {
        src = ip_string(tvb:raw(ip + 12, 4)),
        dst = ip_string(tvb:raw(ip + 16, 4)),
        sport = tvb(tcp, 2):uint(),
        dport = tvb(tcp + 2, 2):uint(),
        seq = tvb(tcp + 4, 4):uint(),
        ack = tvb(tcp + 8, 4):uint(),
        syn = band(flags, 0x02) ~= 0,
        ack_flag = band(flags, 0x10) ~= 0,
        rst = band(flags, 0x04) ~= 0,
        fin = band(flags, 0x01) ~= 0,
        options = opt_len > 0 and tvb:raw(tcp + 20, opt_len) or "",
        options_offset = opt_len > 0 and tvb:offset() + tcp + 20 or nil,
    }
end

-- Whether the frame being dissected may add to the state: only while the frames
-- go by in order. That is Wireshark's first pass, and tshark's second pass
-- (`-2`), which comes after a reset with the frames already marked visited; never
-- a later look at one frame (a click in the packet list).
local function learning(pinfo)
    local num = pinfo.number
    if num > state.last and (not pinfo.visited or num == state.last + 1) then
        state.last = num
        state.learning = num
    end
    return state.learning == num
end

-- The analysis of the frame being dissected, made once while learning: from
-- the header fields (the option dissector; there are fields when there is a
-- tree) or from the frame's bytes (the postdissector, `frame` its whole tvb).
local function frame_analysis(pinfo, frame)
    local num = pinfo.number
    local a = state.frames[num]
    if a == nil and learning(pinfo) then
        local seg
        if frame then
            seg = frame_segment(frame)
        else
            seg = current_segment()
            if seg == nil and first(x_flags) == nil then
                return nil -- no tree: the postdissector learns from the bytes
            end
        end
        if seg then
            a = analyze(seg)
            a.seg = seg
        else
            a = false
        end
        state.frames[num] = a
    end
    return a or nil
end

---------------------------------------------------------------------------
-- Kind 253 option dissector
---------------------------------------------------------------------------

local tcp_option_table = DissectorTable.get("tcp.option")
local experimental = tcp_option_table:get_dissector(253)

local function status_text(kind, status)
    if status == "ok" then
        return "[" .. kind .. " ok]"
    elseif status == "unknown" or status == nil then
        return ""
    end
    return "[" .. kind .. " " .. status .. "]"
end

local function add_checks(tree, item, r)
    if r == nil then
        return ""
    end
    local summary = {}
    if r.token_status then
        local t = tree:add(F.token_status, r.token_status)
        t:set_generated()
        if r.token_status == "WRONG" then
            t:add_proto_expert_info(E.token_wrong)
        end
        summary[#summary + 1] = status_text("token", r.token_status)
    end
    if r.mac_status then
        local t = tree:add(F.mac_status, r.mac_status)
        t:set_generated()
        if r.mac_status == "BAD" then
            t:add_proto_expert_info(E.mac_bad)
            tree:add(F.mac_expected, hex(r.mac_expected)):set_generated()
        elseif r.why then
            t:append_text(" (" .. r.why .. ")")
        end
        summary[#summary + 1] = status_text("MAC", r.mac_status)
    end
    if r.nonce_status then
        local t = tree:add(F.nonce_status, r.nonce_status)
        t:set_generated()
        if r.nonce_status == "WRONG" then
            t:add_proto_expert_info(E.nonce_wrong)
        end
        summary[#summary + 1] = status_text("nonce", r.nonce_status)
    end
    if r.replay ~= nil then
        local t = tree:add(F.replay, r.replay)
        t:set_generated()
        if r.replay then
            t:add_proto_expert_info(E.replay)
            summary[#summary + 1] = "[replay]"
        end
    end
    local text = table.concat(summary, " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    if text ~= "" then
        item:append_text(" " .. text)
    end
    return text
end

-- §3.6 rule 4: where each form is meaningful.
local function misplaced(form, seg)
    if not seg then
        return nil
    end
    local syn_only = seg.syn and not seg.ack_flag and not seg.rst and not seg.fin
    local synack = seg.syn and seg.ack_flag
    local plain_ack = seg.ack_flag and not seg.syn
    if form == "msyn" and not syn_only then
        return "the MSYN form belongs in an MSYN (SYN without ACK, RST or FIN)"
    elseif (form == "msyn-ack" or form == "msyn-ack-v0") and not synack then
        return "the MSYN-ACK form belongs in an MSYN-ACK (SYN and ACK)"
    elseif (form == "confirm" or form == "confirm-v0") and not plain_ack then
        return "the Confirm form belongs on ACK segments after an MSYN-ACK"
    elseif form == "relay-msyn" and not syn_only then
        return "the relay MSYN form belongs in an MSYN to the proxy (SYN without ACK, RST or FIN)"
    elseif form == "relay-msyn-ack" and not synack then
        return "the relay MSYN-ACK form belongs in the proxy's MSYN-ACK (SYN and ACK)"
    elseif form == "address-update" and not plain_ack then
        return "Address-Update belongs on ACK segments"
    elseif (form == "permit-full" or form == "permit-short") and not seg.syn then
        return "Migrate-Permit belongs in SYN, SYN-ACK and MSYN"
    end
    return nil
end

local function info(pinfo, text)
    pinfo.cols.info:append(" " .. text)
end

function p_opt.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 4 then
        return experimental:call(tvb, pinfo, tree)
    end
    local exid = tvb(2, 2):uint()
    if not exid_names[exid] then
        -- RFC 6994 §3: other experiments' options are theirs; Wireshark's own
        -- dissector shows them as generic experimental options.
        return experimental:call(tvb, pinfo, tree)
    end
    local a = frame_analysis(pinfo)
    local r
    if a and a.seg.options_offset then
        r = a.items[tvb:offset() - a.seg.options_offset]
    end
    local seg = a and a.seg
    local optlen = tvb(1, 1):uint()
    local item = tree:add(p_opt, tvb(), "sustain " .. exid_names[exid])
    item:add(F.kind, tvb(0, 1))
    item:add(F.len, tvb(1, 1))
    item:add(F.exid, tvb(2, 2))
    if a then
        item:add(F.conn, a.conn):set_generated()
    end
    if a and r == nil then
        item:add_proto_expert_info(E.after_eol)
    end
    if r and r.duplicate then
        item:add_proto_expert_info(E.duplicate, exid_names[exid] .. " appears more than once in this segment (PROTOCOL.md §3.6 rule 2)")
    end
    local dec = r and r.dec or decode({ exid = exid, len = optlen, data = tvb:raw(4, len - 4) })
    local function malformed(text)
        item:add(F.form, "malformed")
        item:add(F.malformed, text)
        item:add_proto_expert_info(E.bad_length, text)
        item:append_text(" (MALFORMED: length " .. optlen .. ")")
        info(pinfo, exid_names[exid] .. "(MALFORMED len=" .. optlen .. ")")
        if len > 4 then
            item:add(F.data, tvb(4))
        end
    end
    if dec == nil then
        malformed(string.format("%s with length %d: its forms have lengths %s (PROTOCOL.md §3.6 rule 2)",
            exid_names[exid], optlen, LENGTHS[exid]))
        return len
    end
    item:add(F.form, dec.form)
    local where = misplaced(dec.form, seg)
    if where then
        item:add_proto_expert_info(E.misplaced, where .. " (PROTOCOL.md §3.6 rule 4)")
    end
    if exid == EXID_PERMIT then
        item:add(F.permit_addr, tvb(4, 4))
        item:add(F.permit_port, tvb(8, 2))
        local direct = ip_string(dec.addr) .. ":" .. dec.port
        item:append_text((dec.key and " (full): " or " (short): ") .. direct)
        if dec.key then
            local k = item:add(F.permit_key, tvb(10, 8))
            item:add(F.permit_key_token, token_of(dec.key)):set_generated()
            if dec.key == string.rep("\0", 8) then
                k:add_proto_expert_info(E.zero_key)
            end
        end
        if seg then
            local natted = direct ~= seg.src .. ":" .. seg.sport
            item:add(F.permit_natted, natted):set_generated()
            if natted then
                item:append_text(" (NAPT between: source is " .. seg.src .. ":" .. seg.sport .. ")")
            end
        end
        info(pinfo, "Permit=" .. direct .. (dec.key and "+key" or ""))
    elseif exid == EXID_MIGRATE then
        local text
        if dec.form == "msyn" then
            item:add(F.token, tvb(4, 4))
            item:add(F.request, tvb(8, 4))
            item:add(F.mac, tvb(12, 8))
            text = string.format("MSYN(req=%d token=%08x)", dec.request, dec.token)
            item:append_text(" (MSYN form): req=" .. dec.request)
        elseif dec.form == "msyn-ack" or dec.form == "msyn-ack-v0" then
            item:add(F.token, tvb(4, 4))
            item:add(F.request, tvb(8, 4))
            item:add(F.nonce, tvb(12, 4))
            if dec.form == "msyn-ack" then
                item:add(F.received, tvb(16, 3))
                item:add(F.mac, tvb(19, 8))
                text = string.format("MSYN-ACK(req=%d nonce=%08x rcvd=%d)", dec.request, dec.nonce, dec.received)
            else
                item:add(F.mac, tvb(16, 8))
                text = string.format("MSYN-ACK(req=%d nonce=%08x, version 0)", dec.request, dec.nonce)
            end
            item:append_text(" (MSYN-ACK form" .. (dec.form == "msyn-ack-v0" and ", version 0" or "")
                .. "): req=" .. dec.request)
        else
            item:add(F.request, tvb(4, 4))
            item:add(F.nonce, tvb(8, 4))
            if dec.form == "confirm" then
                item:add(F.received, tvb(12, 4))
                text = string.format("Confirm(req=%d nonce=%08x rcvd=%d)", dec.request, dec.nonce, dec.received)
            else
                text = string.format("Confirm(req=%d nonce=%08x, version 0)", dec.request, dec.nonce)
            end
            item:append_text(" (Confirm form" .. (dec.form == "confirm-v0" and ", version 0" or "")
                .. "): req=" .. dec.request)
        end
        local checks = add_checks(item, item, r)
        info(pinfo, text .. (checks ~= "" and " " .. checks or ""))
        if dec.form == "msyn" or dec.form == "msyn-ack" or dec.form == "msyn-ack-v0" then
            item:add_proto_expert_info(E.move, text)
        end
    elseif exid == EXID_UPDATE then
        item:add(F.au_old, tvb(4, 4))
        item:add(F.au_token, tvb(8, 4))
        item:add(F.au_request, tvb(12, 4))
        item:add(F.au_mac, tvb(16, 8))
        item:append_text(": old " .. ip_string(dec.old) .. ", req=" .. dec.request)
        local checks = add_checks(item, item, r)
        info(pinfo, string.format("Address-Update(req=%d old=%s)%s", dec.request, ip_string(dec.old),
            checks ~= "" and " " .. checks or ""))
    elseif exid == EXID_RELAY then
        local text
        item:add(F.relay_id, tvb(4, 4))
        item:add(F.relay_request, tvb(8, 4))
        if dec.form == "relay-msyn" then
            item:add(F.relay_mac, tvb(12, 8))
            text = string.format("Relay-MSYN(ticket=%08x req=%d)", dec.ticket, dec.request)
            item:append_text(" (relay MSYN form): req=" .. dec.request)
        else
            item:add(F.relay_nonce, tvb(12, 4))
            item:add(F.relay_received, tvb(16, 3))
            item:add(F.relay_mac, tvb(19, 8))
            text = string.format("Relay-MSYN-ACK(ticket=%08x req=%d nonce=%08x rcvd=%d)", dec.ticket,
                dec.request, dec.nonce, dec.received)
            item:append_text(" (relay MSYN-ACK form): req=" .. dec.request)
        end
        local checks = add_checks(item, item, r)
        info(pinfo, text .. (checks ~= "" and " " .. checks or ""))
        item:add_proto_expert_info(E.move, text)
    end
    return len
end

tcp_option_table:add(253, p_opt)

-- Every TCP segment goes through the analysis on the first pass, options or
-- not, so that connections are followed as the normalizer follows them.
local p_follow = Proto("sustain_follow", "sustain connection follower")
function p_follow.dissector(tvb, pinfo, tree)
    frame_analysis(pinfo, tvb)
end
register_postdissector(p_follow)

function p_opt.init()
    reset_state()
end

---------------------------------------------------------------------------
-- Mobility server control protocol (PROTOCOL.md §15)
---------------------------------------------------------------------------

local MSG = {
    [0x01] = { name = "Register", len = 66, from = "host" },
    [0x02] = { name = "MoveReport", len = 64, from = "host" },
    [0x03] = { name = "Unregister", len = 34, from = "host" },
    [0x81] = { name = "Ack", len = 40, from = "server" },
    [0x82] = { name = "PeerLocation", len = 46, from = "server" },
    [0x83] = { name = "RelayAssignment", len = 66, from = "server" },
    [0xFF] = { name = "Error", len = 18, from = "server" },
}
local type_names = {}
for k, v in pairs(MSG) do
    type_names[k] = v.name
end
local outcome_names = {
    [1] = "Registered", [2] = "Unregistered", [3] = "YouSend", [4] = "PeerSends",
    [5] = "RelayNeeded", [6] = "Waiting",
}
local error_names = {
    [1] = "Garbage", [2] = "Malformed", [3] = "Truncated", [4] = "Oversized",
    [5] = "UnknownVersion", [6] = "UnknownType", [7] = "BadMac", [8] = "Replayed",
    [9] = "UnknownConnection", [10] = "Conflict", [11] = "RateLimited",
    [12] = "RegistryFull", [13] = "UnexpectedType",
}
local side_names = { [0] = "low", [1] = "high" }

local C = {
    version = ProtoField.uint8("sustainctl.version", "Version", base.DEC),
    type = ProtoField.uint8("sustainctl.type", "Type", base.HEX, type_names),
    length = ProtoField.uint16("sustainctl.length", "Length", base.DEC),
    id = ProtoField.uint64("sustainctl.id", "Connection id", base.HEX),
    side = ProtoField.uint8("sustainctl.side", "Side", base.DEC, side_names),
    reserved = ProtoField.uint8("sustainctl.reserved", "Reserved", base.HEX),
    number = ProtoField.uint32("sustainctl.number", "Number (request from a host, notice from the server)", base.DEC),
    mac = ProtoField.bytes("sustainctl.mac", "MAC (truncated HMAC-SHA256)"),
    mac_status = ProtoField.string("sustainctl.mac_status", "MAC check"),
    mac_expected = ProtoField.string("sustainctl.mac_expected", "Expected MAC"),
    verifier = ProtoField.bytes("sustainctl.verifier", "Verifier"),
    direct_addr = ProtoField.ipv4("sustainctl.direct.addr", "Sender's direct address"),
    direct_port = ProtoField.uint16("sustainctl.direct.port", "Sender's direct port", base.DEC),
    peer_seen_addr = ProtoField.ipv4("sustainctl.peer_seen.addr", "Peer's address as the sender sees it"),
    peer_seen_port = ProtoField.uint16("sustainctl.peer_seen.port", "Peer's port as the sender sees it", base.DEC),
    last_notice = ProtoField.uint32("sustainctl.last_notice", "Last notice number accepted", base.DEC),
    old_direct_addr = ProtoField.ipv4("sustainctl.old_direct.addr", "Sender's old direct address"),
    old_direct_port = ProtoField.uint16("sustainctl.old_direct.port", "Sender's old direct port", base.DEC),
    old_seen_addr = ProtoField.ipv4("sustainctl.old_seen.addr", "Sender's old address as the peer saw it"),
    old_seen_port = ProtoField.uint16("sustainctl.old_seen.port", "Sender's old port as the peer saw it", base.DEC),
    peer_direct_addr = ProtoField.ipv4("sustainctl.peer_direct.addr", "Peer's direct address"),
    peer_direct_port = ProtoField.uint16("sustainctl.peer_direct.port", "Peer's direct port", base.DEC),
    new_direct_addr = ProtoField.ipv4("sustainctl.new_direct.addr", "Sender's new direct address"),
    new_direct_port = ProtoField.uint16("sustainctl.new_direct.port", "Sender's new direct port", base.DEC),
    acked = ProtoField.uint32("sustainctl.ack.request", "Request number acknowledged", base.DEC),
    outcome = ProtoField.uint8("sustainctl.ack.outcome", "Outcome", base.DEC, outcome_names),
    body_reserved = ProtoField.uint8("sustainctl.body_reserved", "Reserved", base.HEX),
    cause = ProtoField.uint32("sustainctl.cause", "Recipient's request that led to it (0: none)", base.DEC),
    target_addr = ProtoField.ipv4("sustainctl.target.addr", "Target address"),
    target_port = ProtoField.uint16("sustainctl.target.port", "Target port", base.DEC),
    flags = ProtoField.uint8("sustainctl.flags", "Flags", base.HEX),
    flag_self_napt = ProtoField.bool("sustainctl.flags.recipient_napt", "Recipient is behind a NAPT", 8, nil, 0x01),
    flag_peer_napt = ProtoField.bool("sustainctl.flags.peer_napt", "Peer is behind a NAPT", 8, nil, 0x02),
    proxy_addr = ProtoField.ipv4("sustainctl.proxy.addr", "Proxy address"),
    proxy_port = ProtoField.uint16("sustainctl.proxy.port", "Relay port", base.DEC),
    ticket_id = ProtoField.uint32("sustainctl.ticket.id", "Ticket id", base.HEX),
    ticket_key = ProtoField.bytes("sustainctl.ticket.key", "Ticket key"),
    lifetime = ProtoField.uint16("sustainctl.ticket.lifetime", "Lifetime (s)", base.DEC),
    err_code = ProtoField.uint8("sustainctl.error.code", "Error code", base.DEC, error_names),
    err_type = ProtoField.uint8("sustainctl.error.type", "Type of the offending message", base.HEX, type_names),
    err_id = ProtoField.uint64("sustainctl.error.id", "Its connection id", base.HEX),
    err_number = ProtoField.uint32("sustainctl.error.number", "Its number", base.DEC),
    body = ProtoField.bytes("sustainctl.body", "Body"),
}
local cfields = {}
for _, f in pairs(C) do
    cfields[#cfields + 1] = f
end
p_ctl.fields = cfields

local CE = {
    garbage = ProtoExpert.new("sustainctl.garbage", "Length below 4: the stream cannot be split any more",
        expert.group.MALFORMED, expert.severity.ERROR),
    oversized = ProtoExpert.new("sustainctl.oversized", "Length above 256: the stream cannot be split any more",
        expert.group.MALFORMED, expert.severity.ERROR),
    malformed = ProtoExpert.new("sustainctl.malformed", "Malformed control message",
        expert.group.MALFORMED, expert.severity.ERROR),
    unknown = ProtoExpert.new("sustainctl.unknown", "Unknown version or type (skipped by receivers)",
        expert.group.UNDECODED, expert.severity.WARN),
    mac_bad = ProtoExpert.new("sustainctl.mac_bad", "Control MAC does not verify",
        expert.group.SECURITY, expert.severity.WARN),
    verifier_mismatch = ProtoExpert.new("sustainctl.verifier_mismatch",
        "Verifier is not the one the captured keys give",
        expert.group.SECURITY, expert.severity.WARN),
    error = ProtoExpert.new("sustainctl.error.expert", "Error reply",
        expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
local cexperts = {}
for _, e in pairs(CE) do
    cexperts[#cexperts + 1] = e
end
p_ctl.experts = cexperts

p_ctl.prefs.port = Pref.uint("Control port", 7001,
    "TCP port of the mobility server (sustain-server --bind ADDR:PORT; the lab uses 7001)")
p_data.prefs.ports = Pref.range("Transfer ports", "5001",
    "TCP ports whose payload is the lab's opaque transfer data (not guessed as Thrift or anything else); empty to disable",
    65535)

local function add_addr(tree, fa, fp, tvb, at)
    tree:add(fa, tvb(at, 4))
    tree:add(fp, tvb(at + 4, 2))
    return string.format("%s:%d", ip_string(tvb:raw(at, 4)), tvb(at + 4, 2):uint())
end

-- The MAC check of one authenticated message, made once on the first pass.
local function ctl_check(pinfo, tvb, mtype, len)
    local key = pinfo.number .. ":" .. tvb:offset() .. ":" .. hex(tvb:raw(0, len))
    local cached = state.ctl[key]
    if cached or not learning(pinfo) then
        return cached or { status = "unknown" }
    end
    local msg = tvb:raw(0, len)
    local id = hex(msg:sub(5, 12))
    local known = state.verifiers[id]
    local label = MSG[mtype].from == "host" and "sustain control host\0" or "sustain control server\0"
    local signed = msg:sub(1, len - 16)
    local mac = msg:sub(len - 15, len)
    local r = { status = "unknown" }
    local verifier, from
    if mtype == 0x01 then
        -- §15.5: a Register is checked under the verifier it carries.
        verifier, from = msg:sub(19, 34), "the verifier it carries"
        if known and known.verifier ~= verifier then
            r.mismatch = known.from
        end
    elseif known then
        verifier, from = known.verifier, known.from
    end
    if verifier then
        local expected = hmac_sha256(verifier, label .. signed):sub(1, 16)
        r.status = expected == mac and "ok" or "BAD"
        r.expected = expected
        r.from = from
        if mtype == 0x01 and r.status == "ok" and not known then
            state.verifiers[id] = { verifier = verifier, from = "the Register in frame " .. pinfo.number }
        end
    end
    state.ctl[key] = r
    return r
end

local function dissect_message(tvb, pinfo, tree)
    local total = tvb:len()
    pinfo.cols.protocol = "sustain-ctl"
    local version, mtype, len = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 2):uint()
    local m = MSG[mtype]
    local name = m and m.name or string.format("type 0x%02x", mtype)
    local item = tree:add(p_ctl, tvb(0, math.min(total, math.max(len, 4))), "sustain control: " .. name)
    item:add(C.version, tvb(0, 1))
    item:add(C.type, tvb(1, 1))
    local litem = item:add(C.length, tvb(2, 2))
    local summary = name
    if len < 4 then
        litem:add_proto_expert_info(CE.garbage)
        item:add(C.body, tvb(4))
        pinfo.cols.info:append(" Garbage(len=" .. len .. ")")
        return total
    elseif len > 256 then
        litem:add_proto_expert_info(CE.oversized)
        if total > 4 then
            item:add(C.body, tvb(4))
        end
        pinfo.cols.info:append(" Oversized(len=" .. len .. ")")
        return total
    end
    if version ~= 1 or not m then
        item:add_proto_expert_info(CE.unknown, version ~= 1 and ("unknown version " .. version)
            or string.format("unknown type 0x%02x", mtype))
        if len > 4 then
            item:add(C.body, tvb(4, len - 4))
        end
        pinfo.cols.info:append(" " .. summary)
        return len
    end
    if len ~= m.len then
        litem:add_proto_expert_info(CE.malformed,
            string.format("%s must be %d bytes long, not %d (PROTOCOL.md §15.3)", name, m.len, len))
        if len > 4 then
            item:add(C.body, tvb(4, len - 4))
        end
        pinfo.cols.info:append(" " .. summary .. "(MALFORMED len=" .. len .. ")")
        return len
    end
    if mtype == 0xFF then
        local code = tvb(4, 1):uint()
        item:add(C.err_code, tvb(4, 1))
        item:add(C.err_type, tvb(5, 1))
        item:add(C.err_id, tvb(6, 8))
        item:add(C.err_number, tvb(14, 4))
        local cname = error_names[code] or ("code " .. code)
        item:add_proto_expert_info(CE.error, "Error " .. cname)
        item:append_text(": " .. cname)
        pinfo.cols.info:append(string.format(" Error %s (type 0x%02x, id %s, number %d)", cname,
            tvb(5, 1):uint(), hex(tvb:raw(6, 8)), tvb(14, 4):uint()))
        return len
    end
    item:add(C.id, tvb(4, 8))
    local side = tvb(12, 1):uint()
    local sitem = item:add(C.side, tvb(12, 1))
    if side > 1 then
        sitem:add_proto_expert_info(CE.malformed, "side must be 0 (low) or 1 (high) (PROTOCOL.md §15.3)")
    end
    item:add(C.reserved, tvb(13, 1))
    item:add(C.number, tvb(14, 4))
    local b = 18
    local extra = ""
    if mtype == 0x01 then
        item:add(C.verifier, tvb(b, 16))
        local direct = add_addr(item, C.direct_addr, C.direct_port, tvb, b + 16)
        add_addr(item, C.peer_seen_addr, C.peer_seen_port, tvb, b + 22)
        item:add(C.last_notice, tvb(b + 28, 4))
        extra = " direct=" .. direct
    elseif mtype == 0x02 then
        add_addr(item, C.old_direct_addr, C.old_direct_port, tvb, b)
        add_addr(item, C.old_seen_addr, C.old_seen_port, tvb, b + 6)
        add_addr(item, C.peer_direct_addr, C.peer_direct_port, tvb, b + 12)
        add_addr(item, C.peer_seen_addr, C.peer_seen_port, tvb, b + 18)
        extra = " new=" .. add_addr(item, C.new_direct_addr, C.new_direct_port, tvb, b + 24)
    elseif mtype == 0x81 then
        item:add(C.acked, tvb(b, 4))
        local outcome = tvb(b + 4, 1):uint()
        local o = item:add(C.outcome, tvb(b + 4, 1))
        if not outcome_names[outcome] then
            o:add_proto_expert_info(CE.malformed, "unknown Ack outcome (PROTOCOL.md §15.7)")
        end
        item:add(C.body_reserved, tvb(b + 5, 1))
        extra = string.format(" req=%d %s", tvb(b, 4):uint(), outcome_names[outcome] or ("outcome " .. outcome))
    elseif mtype == 0x82 then
        item:add(C.cause, tvb(b, 4))
        extra = " target=" .. add_addr(item, C.target_addr, C.target_port, tvb, b + 4)
        local fl = item:add(C.flags, tvb(b + 10, 1))
        fl:add(C.flag_self_napt, tvb(b + 10, 1))
        fl:add(C.flag_peer_napt, tvb(b + 10, 1))
        item:add(C.body_reserved, tvb(b + 11, 1))
    elseif mtype == 0x83 then
        item:add(C.cause, tvb(b, 4))
        extra = " proxy=" .. add_addr(item, C.proxy_addr, C.proxy_port, tvb, b + 4)
        item:add(C.ticket_id, tvb(b + 10, 4))
        item:add(C.ticket_key, tvb(b + 14, 16))
        item:add(C.lifetime, tvb(b + 30, 2))
    end
    item:add(C.mac, tvb(len - 16, 16))
    local r = ctl_check(pinfo, tvb, mtype, len)
    local st = item:add(C.mac_status, r.status)
    st:set_generated()
    if r.status == "BAD" then
        st:add_proto_expert_info(CE.mac_bad)
        item:add(C.mac_expected, hex(r.expected)):set_generated()
    elseif r.status == "unknown" then
        st:append_text(" (no verifier for this id in the capture)")
    else
        st:append_text(" (under " .. r.from .. ")")
    end
    if r.mismatch then
        st:add_proto_expert_info(CE.verifier_mismatch, "the verifier differs from the one derived from " .. r.mismatch)
    end
    local checks = status_text("MAC", r.status)
    item:append_text(string.format(": id %s %s #%d %s", hex(tvb:raw(4, 8)), side_names[side] or "?",
        tvb(14, 4):uint(), checks))
    pinfo.cols.info:append(string.format(" %s(id=%s %s #%d%s)%s", name, hex(tvb:raw(4, 8)),
        side_names[side] or ("side " .. side), tvb(14, 4):uint(), extra, checks ~= "" and " " .. checks or ""))
    return len
end

local function message_len(tvb, pinfo, offset)
    local len = tvb(offset + 2, 2):uint()
    if len < 4 or len > 256 then
        -- §15.3 rule 1: the stream cannot be split any more.
        return tvb:len() - offset
    end
    return len
end

function p_ctl.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "sustain-ctl"
    pinfo.cols.info:set(string.format("%d → %d", pinfo.src_port, pinfo.dst_port))
    dissect_tcp_pdus(tvb, tree, 4, message_len, dissect_message, true)
    return tvb:len()
end

---------------------------------------------------------------------------
-- The server <-> proxy session (PROTOCOL.md §15.14): version, type, length,
-- then the body; every message but Hello ends with a 16-byte MAC under the
-- session key, which is derived from the relay secret and both nonces and
-- so is not in a capture: the MAC is shown, not checked.
---------------------------------------------------------------------------

local PX = {
    version = ProtoField.uint8("sustainpxy.version", "Version", base.DEC),
    mtype = ProtoField.uint8("sustainpxy.type", "Type", base.HEX),
    length = ProtoField.uint16("sustainpxy.length", "Length", base.DEC),
    server_nonce = ProtoField.bytes("sustainpxy.server_nonce", "Server nonce"),
    proxy_nonce = ProtoField.bytes("sustainpxy.proxy_nonce", "Proxy nonce"),
    number = ProtoField.uint32("sustainpxy.number", "Request number", base.DEC),
    ticket_a = ProtoField.uint32("sustainpxy.ticket_a", "Ticket id (low side)", base.HEX),
    ticket_b = ProtoField.uint32("sustainpxy.ticket_b", "Ticket id (high side)", base.HEX),
    lifetime = ProtoField.uint16("sustainpxy.lifetime", "Lifetime (s)", base.DEC),
    port = ProtoField.uint16("sustainpxy.port", "Relay port", base.DEC),
    status = ProtoField.uint8("sustainpxy.status", "Status", base.DEC),
    reason = ProtoField.uint8("sustainpxy.reason", "Reason", base.DEC),
    mac = ProtoField.bytes("sustainpxy.mac", "MAC (session key, not in the capture)"),
}
p_pxy.fields = PX
local PXE = {
    malformed = ProtoExpert.new("sustainpxy.malformed", "Malformed relay session message",
        expert.group.MALFORMED, expert.severity.ERROR),
}
p_pxy.experts = PXE
p_pxy.prefs.port = Pref.uint("Proxy control port", 7002,
    "TCP port of sustain-proxy's control session (the lab's proxy role uses 7002)")

-- Type -> name and exact length (PROTOCOL.md §15.14).
local PXT = {
    [0x10] = { name = "Hello", len = 12 },
    [0x11] = { name = "RelayRequest", len = 36 },
    [0x12] = { name = "RelayRelease", len = 28 },
    [0x90] = { name = "Welcome", len = 36 },
    [0x91] = { name = "RelayGrant", len = 28 },
    [0x92] = { name = "RelayClosed", len = 28 },
}
local GRANT = { [0] = "Granted", [1] = "NoFreePort", [2] = "BadTickets" }

local function dissect_pxy_message(tvb, pinfo, tree)
    local len = tvb:len()
    local mtype = tvb(1, 1):uint()
    local t = PXT[mtype]
    local item = tree:add(p_pxy, tvb(), "sustain relay session: " .. (t and t.name or "unknown type"))
    item:add(PX.version, tvb(0, 1))
    item:add(PX.mtype, tvb(1, 1))
    item:add(PX.length, tvb(2, 2))
    if not t or len ~= t.len then
        item:add_proto_expert_info(PXE.malformed,
            t and string.format("%s has %d bytes, not %d", t.name, len, t.len) or "unknown type")
        pinfo.cols.info:append(" MALFORMED")
        return len
    end
    local text = t.name
    if mtype == 0x10 then
        item:add(PX.server_nonce, tvb(4, 8))
    elseif mtype == 0x90 then
        item:add(PX.server_nonce, tvb(4, 8))
        item:add(PX.proxy_nonce, tvb(12, 8))
    elseif mtype == 0x11 then
        item:add(PX.number, tvb(4, 4))
        item:add(PX.ticket_a, tvb(8, 4))
        item:add(PX.ticket_b, tvb(12, 4))
        item:add(PX.lifetime, tvb(16, 2))
        text = string.format("RelayRequest(#%d tickets %08x %08x)", tvb(4, 4):uint(), tvb(8, 4):uint(),
            tvb(12, 4):uint())
    else
        item:add(PX.number, tvb(4, 4))
        item:add(PX.port, tvb(8, 2))
        local extra = ""
        if mtype == 0x91 then
            item:add(PX.status, tvb(10, 1)):append_text(" (" .. (GRANT[tvb(10, 1):uint()] or "?") .. ")")
            extra = " " .. (GRANT[tvb(10, 1):uint()] or "?")
        elseif mtype == 0x92 then
            item:add(PX.reason, tvb(10, 1))
        end
        text = string.format("%s(#%d port %d%s)", t.name, tvb(4, 4):uint(), tvb(8, 2):uint(), extra)
    end
    if mtype ~= 0x10 then
        item:add(PX.mac, tvb(len - 16, 16))
    end
    pinfo.cols.info:append(" " .. text)
    return len
end

function p_pxy.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "sustain-pxy"
    pinfo.cols.info:set(string.format("%d → %d", pinfo.src_port, pinfo.dst_port))
    dissect_tcp_pdus(tvb, tree, 4, message_len, dissect_pxy_message, true)
    return tvb:len()
end

---------------------------------------------------------------------------
-- The lab's transfer data: opaque, never guessed (Thrift's heuristic matches
-- random bytes and then "reassembles" megabytes of them).
---------------------------------------------------------------------------

function p_data.dissector(tvb, pinfo, tree)
    tree:add(p_data, tvb(), string.format("sustain lab transfer data (%d bytes)", tvb:len()))
    return tvb:len()
end

local tcp_port = DissectorTable.get("tcp.port")
local registered = { ctl = nil, data = nil, pxy = nil }

local function register_ports()
    if registered.ctl then
        tcp_port:remove(registered.ctl, p_ctl)
    end
    if registered.pxy then
        tcp_port:remove(registered.pxy, p_pxy)
    end
    registered.pxy = p_pxy.prefs.port
    if registered.pxy ~= 0 then
        tcp_port:add(registered.pxy, p_pxy)
    end
    if registered.data and registered.data ~= "" then
        tcp_port:remove(registered.data, p_data)
    end
    registered.ctl = p_ctl.prefs.port
    if registered.ctl ~= 0 then
        tcp_port:add(registered.ctl, p_ctl)
    end
    registered.data = tostring(p_data.prefs.ports)
    if registered.data ~= "" then
        tcp_port:add(registered.data, p_data)
    end
end

p_ctl.prefs_changed = register_ports
p_data.prefs_changed = register_ports
p_pxy.prefs_changed = register_ports
register_ports()
