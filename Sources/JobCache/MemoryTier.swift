/// A least-recently-used map bounded by the bytes of what it holds. Owned by one thread (the
/// event loop): no locks. Lookups, inserts and removals are O(1).
///
/// Laid out for 100k entries and more: the entries live in slots of fixed-size chunks (no
/// allocation per entry, and no large copy when it grows), linked in recency order by slot
/// number, and found through an open-addressing table of 4-byte slot numbers. An entry costs a
/// slot (56 bytes for a `CacheKey` and a class value) and about 10 bytes of table, where a node
/// object per entry in a dictionary of nodes cost about 140.
public final class MemoryTier<Key: Hashable, Value> {
    // What a lookup touches is inlinable, so that the cache's module specializes it for its own
    // key and value: unspecialized, each lookup asked the runtime for the metadata of `Slot`
    // and its optionals, about a microsecond per hit (perf, against the dictionary before).
    /// Declared in the order that packs tightest: the cost fills what a `CacheKey` (33 bytes)
    /// leaves before the value's alignment. No hash is kept: a lookup compares keys at each
    /// probe, and a removal or a growth hashes the keys it moves again. Its 32 bits would make
    /// every cached entry's slot 64 bytes.
    @usableFromInline struct Slot {
        /// nil while the slot is free.
        @usableFromInline var key: Key?
        /// The value's cost in `StoredCost`'s 32 bits.
        var cost: StoredCost
        @usableFromInline var value: Value?
        /// Slot numbers in recency order (`none` at either end); a free slot's `older` links
        /// the free list.
        @usableFromInline var newer: Int32
        @usableFromInline var older: Int32
    }

    @inlinable static var none: Int32 { -1 }
    @inlinable static var chunkShift: Int { 10 }
    @inlinable static var chunkSize: Int { 1 << chunkShift }
    /// Slots come in chunks of `chunkSize`; slots below `madeSlots` are initialized (free or not).
    @usableFromInline var chunks: [UnsafeMutablePointer<Slot>] = []
    private var madeSlots = 0
    private var freeSlots = MemoryTier.none
    /// Open addressing with linear probing: slot number + 1 per position, 0 for none; a power of
    /// two long, at most three quarters full. Removal shifts the run after the hole back, so no
    /// tombstones accumulate. The hash is `hashValue`, seeded per process, so no client can
    /// choose keys that share a run.
    @usableFromInline var table: UnsafeMutablePointer<Int32>
    @usableFromInline var tableMask: Int
    @usableFromInline var newest = MemoryTier.none
    @usableFromInline var oldest = MemoryTier.none

    public let budgetBytes: Int
    public private(set) var count = 0
    public private(set) var totalBytes = 0
    public private(set) var evictions = 0
    /// Told of each value evicted for the budget (not of one replaced by `set` or removed:
    /// the caller knows of those).
    public var onEvicted: ((Key, Value) -> Void)?

    public init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
        tableMask = 15
        table = .allocate(capacity: tableMask + 1)
        table.initialize(repeating: 0, count: tableMask + 1)
    }

    deinit {
        for (number, chunk) in chunks.enumerated() {
            chunk.deinitialize(count: max(0, min(Self.chunkSize, madeSlots - number * Self.chunkSize)))
            chunk.deallocate()
        }
        table.deallocate()
    }

    /// The value for `key`, marked as just used.
    @inlinable public func get(_ key: Key) -> Value? {
        guard let (_, number) = find(key, hash: Self.hash(of: key)) else { return nil }
        moveToNewest(number)
        return slot(number).pointee.value
    }

    /// The value without changing its recency (for statistics and purges).
    @inlinable public func peek(_ key: Key) -> Value? {
        find(key, hash: Self.hash(of: key)).flatMap { slot($0.number).pointee.value }
    }

    /// Stores `value` costing `cost` bytes, then evicts least recently used entries over budget;
    /// returns the value it replaced. A value larger than the whole budget is not stored.
    @discardableResult
    public func set(_ key: Key, _ value: Value, cost: Int) -> Value? {
        let hash = Self.hash(of: key)
        let replaced = find(key, hash: hash).flatMap { removeEntry(at: $0.position, number: $0.number) }
        guard let cost = StoredCost(cost), cost.bytes <= budgetBytes else { return replaced }
        if (count + 1) * 4 > (tableMask + 1) * 3 { growTable() }
        let number = takeSlot()
        slot(number).pointee = Slot(key: key, cost: cost, value: value, newer: Self.none, older: Self.none)
        var position = Int(hash) & tableMask
        while table[position] != 0 { position = (position + 1) & tableMask }
        table[position] = number + 1
        count += 1
        totalBytes += cost.bytes
        link(number)
        evictOverBudget()
        return replaced
    }

    @discardableResult
    public func remove(_ key: Key) -> Value? {
        find(key, hash: Self.hash(of: key)).flatMap { removeEntry(at: $0.position, number: $0.number) }
    }

    /// Adds `bytes` to the cost of `key`'s value when `isHeld` says the value is the one meant
    /// (a value made bigger after it was stored), then evicts over budget as `set` does.
    public func addCost(_ bytes: Int, to key: Key, ifHolding isHeld: (Value) -> Bool) {
        guard bytes > 0, let (position, number) = find(key, hash: Self.hash(of: key)), let value = slot(number).pointee.value,
              isHeld(value) else { return }
        let before = slot(number).pointee.cost.bytes
        // A value grown past what a slot can count (128 TiB) is let go, not undercounted.
        guard let after = StoredCost(before + bytes) else {
            _ = removeEntry(at: position, number: number)
            return
        }
        slot(number).pointee.cost = after
        totalBytes += after.bytes - before
        evictOverBudget()
    }

    /// Keys for which `predicate` holds (a scan of the keys: for purges and list sightings, not
    /// hits). All keys are taken first: a predicate that changes the tier cannot lead the walk
    /// into freed slots.
    public func keys(where predicate: (Key) -> Bool) -> [Key] {
        var keys: [Key] = []
        keys.reserveCapacity(count)
        var number = newest
        while number != Self.none {
            let entry = slot(number)
            if let key = entry.pointee.key { keys.append(key) }
            number = entry.pointee.older
        }
        return keys.filter(predicate)
    }

    /// Calls `body` with each value, most recently used first. `body` must not change the tier.
    public func forEachValue(_ body: (Value) -> Void) {
        var number = newest
        while number != Self.none {
            let entry = slot(number)
            if let value = entry.pointee.value { body(value) }
            number = entry.pointee.older
        }
    }

    /// Removes every entry whose key satisfies `predicate`; returns how many.
    @discardableResult
    public func removeAll(where predicate: (Key) -> Bool) -> Int {
        let doomed = keys(where: predicate)
        for key in doomed { remove(key) }
        return doomed.count
    }

    // MARK: Slots

    @inlinable func slot(_ number: Int32) -> UnsafeMutablePointer<Slot> {
        let number = Int(number)
        return chunks[number >> Self.chunkShift] + (number & (Self.chunkSize - 1))
    }

    private func takeSlot() -> Int32 {
        if freeSlots != Self.none {
            let number = freeSlots
            freeSlots = slot(number).pointee.older
            return number
        }
        if madeSlots == chunks.count * Self.chunkSize { chunks.append(.allocate(capacity: Self.chunkSize)) }
        let number = Int32(madeSlots)
        let fresh = chunks[madeSlots >> Self.chunkShift] + (madeSlots & (Self.chunkSize - 1))
        fresh.initialize(to: Slot(key: nil, cost: .zero, value: nil, newer: Self.none, older: Self.none))
        madeSlots += 1
        return number
    }

    // MARK: Table

    /// A key's home in the table is its `hashValue` masked (at most 2^32 positions: slot
    /// numbers are 31 bits).
    @inlinable static func hash(of key: Key) -> UInt32 { UInt32(truncatingIfNeeded: key.hashValue) }

    /// The home of the entry in slot `number`.
    private func home(of number: Int32) -> Int {
        guard let key = slot(number).pointee.key else { preconditionFailure("a free slot in the table") }
        return Int(Self.hash(of: key)) & tableMask
    }

    /// Where `key` is in the table, and its slot.
    @inlinable func find(_ key: Key, hash: UInt32) -> (position: Int, number: Int32)? {
        var position = Int(hash) & tableMask
        while true {
            let entry = table[position]
            if entry == 0 { return nil }
            if slot(entry - 1).pointee.key == key { return (position, entry - 1) }
            position = (position + 1) & tableMask
        }
    }

    /// Takes the entry out of the table, the recency order and the accounts; frees its slot.
    private func removeEntry(at position: Int, number: Int32) -> Value? {
        vacate(position)
        unlink(number)
        let entry = slot(number)
        totalBytes -= entry.pointee.cost.bytes
        count -= 1
        let value = entry.pointee.value
        entry.pointee = Slot(key: nil, cost: .zero, value: nil, newer: Self.none, older: freeSlots)
        freeSlots = number
        if count == 0 { releaseStorage() }
        return value
    }

    /// Gives back the slots and the table once nothing is held (a purge, a tier emptied by its
    /// budget): they would otherwise stay at their high-water mark. The first chunk is kept.
    private func releaseStorage() {
        guard madeSlots > 0 else { return }
        for (number, chunk) in chunks.enumerated() {
            chunk.deinitialize(count: max(0, min(Self.chunkSize, madeSlots - number * Self.chunkSize)))
            if number > 0 { chunk.deallocate() }
        }
        chunks.removeLast(chunks.count - 1)
        madeSlots = 0
        freeSlots = Self.none
        if tableMask > 15 {
            table.deallocate()
            tableMask = 15
            table = .allocate(capacity: tableMask + 1)
        }
        table.initialize(repeating: 0, count: tableMask + 1)
    }

    /// Chunks of slots held (for tests).
    var chunkCount: Int { chunks.count }

    /// Empties a table position, moving back each later entry of the run that may not sit
    /// past the hole (its home is at or before it), so every entry stays reachable from its home.
    private func vacate(_ position: Int) {
        var hole = position
        var next = (hole + 1) & tableMask
        while table[next] != 0 {
            let home = home(of: table[next] - 1)
            if (next - home) & tableMask >= (next - hole) & tableMask {
                table[hole] = table[next]
                hole = next
            }
            next = (next + 1) & tableMask
        }
        table[hole] = 0
    }

    private func growTable() {
        let oldTable = table, oldSize = tableMask + 1
        tableMask = oldSize * 2 - 1
        table = .allocate(capacity: tableMask + 1)
        table.initialize(repeating: 0, count: tableMask + 1)
        for position in 0..<oldSize where oldTable[position] != 0 {
            var target = home(of: oldTable[position] - 1)
            while table[target] != 0 { target = (target + 1) & tableMask }
            table[target] = oldTable[position]
        }
        oldTable.deallocate()
    }

    // MARK: Recency

    private func evictOverBudget() {
        while totalBytes > budgetBytes, oldest != Self.none {
            guard let key = slot(oldest).pointee.key, let (position, number) = find(key, hash: Self.hash(of: key)) else {
                preconditionFailure("an unlisted slot")
            }
            let value = removeEntry(at: position, number: number)
            evictions += 1
            if let value { onEvicted?(key, value) }
        }
    }

    @inlinable func link(_ number: Int32) {
        let entry = slot(number)
        entry.pointee.older = newest
        entry.pointee.newer = Self.none
        if newest != Self.none { slot(newest).pointee.newer = number }
        newest = number
        if oldest == Self.none { oldest = number }
    }

    @inlinable func unlink(_ number: Int32) {
        let entry = slot(number)
        let (newer, older) = (entry.pointee.newer, entry.pointee.older)
        if older != Self.none { slot(older).pointee.newer = newer } else { oldest = newer }
        if newer != Self.none { slot(newer).pointee.older = older } else { newest = older }
        entry.pointee.newer = Self.none
        entry.pointee.older = Self.none
    }

    @inlinable func moveToNewest(_ number: Int32) {
        guard newest != number else { return }
        unlink(number)
        link(number)
    }
}

/// A value's cost in 32 bits: exact below 2 GiB (every cached detail and route answer, nearly
/// every list), in 64 KiB units rounded up above that, up to 128 TiB. The tier counts the
/// rounded figure, so its total is always what its slots say and never less than what they hold.
@usableFromInline struct StoredCost: Sendable {
    private let raw: UInt32
    static let exactLimit = 1 << 31
    static let unitShift = 16
    static let zero = StoredCost(raw: 0)

    private init(raw: UInt32) { self.raw = raw }

    /// nil for a negative cost or one past 128 TiB.
    init?(_ bytes: Int) {
        if bytes < 0 { return nil }
        if bytes < Self.exactLimit {
            raw = UInt32(bytes)
            return
        }
        let units = (bytes - Self.exactLimit + (1 << Self.unitShift) - 1) >> Self.unitShift
        guard units < Self.exactLimit else { return nil }
        raw = UInt32(Self.exactLimit + units)
    }

    /// The bytes counted for it.
    var bytes: Int {
        let raw = Int(self.raw)
        return raw < Self.exactLimit ? raw : Self.exactLimit + (raw - Self.exactLimit) << Self.unitShift
    }
}
