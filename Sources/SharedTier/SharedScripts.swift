/// The Lua scripts the shared tier runs in Redis, each several steps that must be atomic.
/// Instants in entries are wall-clock seconds (as the disk tier keeps them); the budget's
/// instants are Redis's own `TIME` in microseconds, so the instances' clocks need not agree.
enum SharedScripts {
    /// Stores an entry unless Redis holds a newer one: by `updated_at` for a detail (an older
    /// answer never replaces a newer one, nor one a list has shown to be superseded), by the
    /// time the upstream confirmed it otherwise. Instants over a day ahead of Redis's clock
    /// (forged, or a clock far off) are ignored, so they cannot block the key. KEYS[1] entry; ARGV updated_at ('' when none),
    /// validated_at, payload, expiry in ms. Returns 1 when stored.
    static let store = RedisScript(name: "store", source: """
        local cur = redis.call('HMGET', KEYS[1], 'u', 'v', 's')
        local u = tonumber(ARGV[1])
        local v = tonumber(ARGV[2])
        local cu, cv, cs = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
        -- Instants more than a day ahead of Redis's clock are not real: they decide nothing.
        local horizon = tonumber(redis.call('TIME')[1]) + 86400
        if cu and cu > horizon then cu = nil end
        if cv and cv > horizon then cv = nil end
        if cs and cs > horizon then cs = nil end
        if u then
          if cu and cu > u then return 0 end
          if cs and cs > u then return 0 end
          if cu and cu == u and cv and cv > v then return 0 end
        elseif cv and cv > v then
          return 0
        end
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'u', ARGV[1], 'v', ARGV[2], 'd', ARGV[3], 'x', ARGV[4])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return 1
        """)

    /// A list answer's sightings applied to the details Redis holds: a newer `updated_at` marks
    /// the detail superseded (field `s`; it is then never served), the same one renews it.
    /// KEYS detail entries; ARGV[1] the list's answer time, ARGV[1+i] the `updated_at` listed
    /// for KEYS[i]. Returns how many changed.
    static let sightings = RedisScript(name: "sightings", source: """
        local at = tonumber(ARGV[1])
        local changed = 0
        for i, key in ipairs(KEYS) do
          local listed = tonumber(ARGV[i + 1])
          if listed then
            local cur = redis.call('HMGET', key, 'u', 'v', 's', 'x')
            local cu, cv, cs, cx = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3]), tonumber(cur[4])
            if cu and cu < listed then
              if not cs or cs < listed then
                redis.call('HSET', key, 's', ARGV[i + 1])
                changed = changed + 1
              end
            elseif cu and cu == listed and cv and cv < at then
              redis.call('HSET', key, 'v', ARGV[1])
              if cx then redis.call('PEXPIRE', key, cx) end
              changed = changed + 1
            end
          end
        end
        return changed
        """)

    /// One token of the shared budget (GCRA: one call per `interval` µs, `burst` at once),
    /// unless the upstream paused everyone. KEYS[1] the theoretical arrival time, KEYS[2] the
    /// pause's end. Returns {granted, µs to wait, paused}.
    static let token = RedisScript(name: "token", source: """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local pause = tonumber(redis.call('GET', KEYS[2]))
        if pause and pause > now then return {0, pause - now, 1} end
        local interval = tonumber(ARGV[1])
        local tolerance = (tonumber(ARGV[2]) - 1) * interval
        local tat = tonumber(redis.call('GET', KEYS[1])) or now
        if tat < now then tat = now end
        if now < tat - tolerance then return {0, math.ceil(tat - tolerance - now), 0} end
        tat = tat + interval
        redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
        return {1, 0, 0}
        """)

    /// Pauses every instance for ARGV[1] µs from Redis's now, unless a longer pause runs.
    /// KEYS[1] the pause's end. Returns 1 when it lengthened the pause.
    static let pause = RedisScript(name: "pause", source: """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local length = tonumber(ARGV[1])
        local ends = now + length
        local cur = tonumber(redis.call('GET', KEYS[1]))
        if cur and cur >= ends then return 0 end
        redis.call('SET', KEYS[1], string.format('%.0f', ends), 'PX', math.ceil(length / 1000) + 1)
        return 1
        """)

    /// Ends or extends a lease only while this instance holds it. KEYS[1] the lease; ARGV[1]
    /// the holder, ARGV[2] 'release' or a new expiry in ms.
    static let lease = RedisScript(name: "lease", source: """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if ARGV[2] == 'release' then return redis.call('DEL', KEYS[1]) end
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        """)

    /// The newest version Redis knows of each entry: for each of KEYS, its `u` and its `s`
    /// (false, a nil reply, when absent), in order. One call for a batch of a list's jobs. A
    /// key that is not a hash (written by someone else) counts as absent rather than failing
    /// the batch.
    static let versions = RedisScript(name: "versions", source: """
        local out = {}
        for i, key in ipairs(KEYS) do
          local f = redis.pcall('HMGET', key, 'u', 's')
          if type(f) ~= 'table' or f.err then f = {false, false} end
          out[2 * i - 1] = f[1] or false
          out[2 * i] = f[2] or false
        end
        return out
        """)

    static let all = [store, sightings, token, pause, lease, versions]
}
