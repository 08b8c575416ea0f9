import Cluster
import Renderer
import Tensors
import XCTest

final class ClusterTests: XCTestCase {
    func testBalancedSharesAreContiguousAndEven() {
        XCTAssertEqual(Array(repeating: 1, count: 10).balancedShares(3), [0, 3, 7, 10])
        XCTAssertEqual(Array(repeating: 1, count: 9).balancedShares(3), [0, 3, 6, 9])
        XCTAssertEqual(Array(repeating: 2, count: 2).balancedShares(3), [0, 1, 1, 2])
        XCTAssertEqual([Int]().balancedShares(2), [0, 0, 0])
        XCTAssertEqual([5].balancedShares(1), [0, 1])
        // regions: a costly batch takes a share of its own
        XCTAssertEqual([1, 1, 6, 1, 1].balancedShares(2), [0, 2, 5])
        XCTAssertEqual([6, 1, 1, 1, 1, 1, 1].balancedShares(2), [0, 1, 7])
        // every split covers every item once, and no share is over the ideal by more than an item
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let costs = (0..<Int.random(in: 0...40, using: &rng)).map { _ in Int.random(in: 1...9, using: &rng) }
            let parts = Int.random(in: 1...8, using: &rng)
            let bounds = costs.balancedShares(parts)
            XCTAssertEqual(bounds.count, parts + 1)
            XCTAssertEqual(bounds.first, 0)
            XCTAssertEqual(bounds.last, costs.count)
            XCTAssertEqual(bounds, bounds.sorted())
            let total = costs.reduce(0, +)
            for r in 0..<parts {
                let load = costs[bounds[r]..<bounds[r + 1]].reduce(0, +)
                XCTAssertLessThanOrEqual(load * parts, total + 2 * 9 * parts, "\(costs) into \(parts): \(bounds)")
            }
        }
    }

    func testTensorPackingRoundTripsBitForBit() throws {
        let a = Tensor(shape: [1, 4, 3, 2], data: (0..<24).map { Float($0) * 0.37 - 2 })
        let b = Tensor(shape: [1, 1], data: [Float.nan])
        let c = Tensor(shape: [2, 3], data: [.infinity, -0.0, .leastNonzeroMagnitude, 3, 4, .greatestFiniteMagnitude])
        let batches = [[a, b], [], [c]]
        let unpacked = try XCTUnwrap(TensorPacking.unpack(TensorPacking.pack(batches)))
        XCTAssertEqual(unpacked.count, 3)
        for (x, y) in zip(batches.joined(), unpacked.joined()) {
            XCTAssertEqual(x.shape, y.shape)
            XCTAssertEqual(x.data.map(\.bitPattern), y.data.map(\.bitPattern))
        }
        XCTAssertEqual(TensorPacking.unpack(TensorPacking.pack([]))?.count, 0)
    }

    func testTensorPackingRefusesMalformedBytes() {
        let good = TensorPacking.pack([[Tensor(shape: [2, 2], data: [1, 2, 3, 4])]])
        XCTAssertNil(TensorPacking.unpack(Array(good.dropLast())), "truncated")
        XCTAssertNil(TensorPacking.unpack(good + [0]), "trailing byte")
        XCTAssertNil(TensorPacking.unpack([]), "empty")
        func int(_ v: Int64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        XCTAssertNil(TensorPacking.unpack(int(1) + int(1) + int(2) + int(-1) + int(4)), "negative dimension")
        XCTAssertNil(TensorPacking.unpack(int(1) + int(1) + int(2) + int(1 << 31) + int(1 << 31)), "size overflow")
        XCTAssertNil(TensorPacking.unpack(int(1) + int(1) + int(99)), "rank 99")
        XCTAssertNil(TensorPacking.unpack(int(Int64.max)), "count beyond the bytes")
        // hostile mutations never crash
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = TensorPacking.unpack(bytes)
        }
    }

    func testLaunchDetection() {
        XCTAssertFalse(MPI.launched(environment: ["PATH": "/usr/bin"]))
        XCTAssertTrue(MPI.launched(environment: ["OMPI_COMM_WORLD_SIZE": "2"]))
        XCTAssertTrue(MPI.launched(environment: ["PMI_RANK": "0"]))
    }

    func testTheLaunchersLibraryIsTriedFirst() {
        XCTAssertEqual(MPI.candidates(["OMPI_COMM_WORLD_SIZE": "2"]).first, "libmpi.so.40")
        XCTAssertEqual(MPI.candidates(["PMI_SIZE": "2"]).first, "libmpich.so.12")
        XCTAssertEqual(MPI.candidates(["PMI_SIZE": "2", "PANORAMA_MPI_LIBRARY": "/opt/x/libmpi.so"]), ["/opt/x/libmpi.so"])
    }

    func testAMissingLibraryIsAClearError() {
        // Runs only where no launcher started the tests: MPI.start would initialise MPI for real.
        guard !MPI.launched() else { return }
        XCTAssertThrowsError(try MPI.start(environment: ["PANORAMA_MPI_LIBRARY": "/nonexistent/libmpi.so"])) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/libmpi.so"), "\(error)")
            XCTAssertTrue("\(error)".contains("apt install openmpi-bin"), "\(error)")
        }
    }
}
